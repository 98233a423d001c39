"""The core imports and runs with napari, qtpy and magicgui blocked."""

import subprocess
import sys
import textwrap

CORE_MODULES = [
    "napari_attnseg",
    "napari_attnseg.volume",
    "napari_attnseg._compute",
    "napari_attnseg._napari.layers",
    "napari_attnseg.io",
    "napari_attnseg.sample",
    "napari_attnseg.model.attention_unet",
    "napari_attnseg.model.checkpoint",
    "napari_attnseg.model.registry",
    "napari_attnseg.inference.predictor",
    "napari_attnseg.crf",
    "napari_attnseg.metrics",
    "napari_attnseg.baselines",
    "napari_attnseg.training.loop",
    "napari_attnseg.interactive.pseudolabels",
    "napari_attnseg.commands.pseudolabel",
    "napari_attnseg.cli",
]


def test_core_imports_with_gui_packages_blocked():
    code = textwrap.dedent(
        f"""
        import sys, importlib
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('napari', 'qtpy', 'magicgui', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6'):
                    raise ImportError('blocked: ' + name)
                return None
        sys.meta_path.insert(0, Block())
        for m in {CORE_MODULES!r}:
            importlib.import_module(m)
        print('ok')
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_package_import_is_light():
    code = (
        "import sys, napari_attnseg, napari_attnseg.volume, napari_attnseg._napari.layers;"
        "heavy=[m for m in ('torch','pydicom','pydensecrf','napari') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
