"""Bad input against the fine-tune, core and ``attnseg finetune`` (issue 12; the registry half of
the bad-input suite, with test_bad_input_registry.py). Every case asserts its result class: a
clear error of our type naming the data and the problem (raised before any training), handled
with a stated caveat (saved, not activated, the reason given), or the correct output.

The activation decision is tested on real (one-step) training runs whose validation Dice is
replaced where a case needs "improved" or "not improved" (``_outcome``): what is tested is what
the fine-tune does with the result, not whether one step of training helps.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_attnseg._progress import drain
from napari_attnseg.errors import AttnsegError, ModelError, TrainingDataError, WriteError
from napari_attnseg.model.checkpoint import load_model
from napari_attnseg.model.registry import ModelRegistry
from napari_attnseg.training import TrainConfig, TrainingPair, finetune_job

from _registry_cases import CORRECT, WARNING, phantom, tiny_net, tiny_spec  # noqa: E402  (tests/core on sys.path)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def reg(tmp_path):
    r = ModelRegistry(tmp_path / "reg", shipped_root=tmp_path / "none")
    r.add_version("tiny", tiny_net(), tiny_spec(), activate=True)
    return r


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=1, steps_per_epoch=1, batch_size=2, patch_size=(16, 16), lr=1e-3, augment=False,
                early_stopping_patience=0, num_threads=1)
    base.update(kw)
    return TrainConfig(**base)


def _snapshot(reg: ModelRegistry) -> list:
    """Every file under the registry with its bytes: 'unchanged' means byte-identical."""
    return sorted((str(p.relative_to(reg.root)), p.read_bytes()) for p in reg.root.rglob("*") if p.is_file())


def _pair(reviewed=None, fg_slices=None, labels=None) -> TrainingPair:
    img, lab = phantom(fg_slices=fg_slices)
    if labels is not None:
        lab = lab.with_data(labels, is_labels=True)
    flags = None if reviewed is None else np.isin(np.arange(img.shape[0]), reviewed)
    return TrainingPair(img, lab, flags, "scan")


def _outcome(monkeypatch, improved: bool | None, **changes):
    """Run the real (one-step) training, then report it as improved (+0.1), not improved (best
    epoch 0) or as it was (None)."""
    import napari_attnseg.training.finetune as ft
    from napari_attnseg.training.loop import train_job as real

    if improved is True:
        changes = {"best_epoch": 1, "best_val_dice": lambda r: min(1.0, r.initial_val_dice + 0.1), **changes}
    elif improved is False:
        changes = {"best_epoch": 0, "best_val_dice": lambda r: r.initial_val_dice, **changes}

    def fake(*a, **k):
        res = yield from real(*a, **k)
        return dataclasses.replace(res, **{k2: (v(res) if callable(v) else v) for k2, v in changes.items()})

    monkeypatch.setattr(ft, "train_job", fake)


def _no_training(monkeypatch):
    import napari_attnseg.training.finetune as ft

    def never(*a, **k):
        raise AssertionError("training started although the input was refused")

    monkeypatch.setattr(ft, "train_job", never)


# =========================================================================== refused up front
NO_FG = np.zeros((6, 20, 24), np.uint8)
DATA_CASES = [  # (id, pair builder, regex): every one a clear ERROR before any training
    ("empty-labels", lambda: [_pair(labels=NO_FG)], r"scan_corrected.nii.gz: the reviewed slices hold no foreground"),
    ("soft-mask-rounded-to-0", lambda: [_pair(labels=np.rint(0.4 * (phantom()[1].data > 0)).astype(np.uint8))],
     r"hold no foreground"),
    ("only-background-reviewed", lambda: [_pair(reviewed=[3, 4, 5], fg_slices=[0, 1, 2])], r"hold no foreground"),
    ("one-foreground-slice", lambda: [_pair(fg_slices=[2])], r"only 1 reviewed slice holds foreground; need at least 2"),
    ("one-reviewed-slice", lambda: [_pair(reviewed=[2])], r"only 1 reviewed slice holds foreground"),
    ("two-reviewed-one-fg", lambda: [_pair(reviewed=[1, 2], fg_slices=[2])], r"only 1 reviewed slice"),
    ("no-pairs", lambda: [], r"no image/labels pairs"),
]


@pytest.mark.parametrize("case_id,build,match", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_meaningless_training_data_is_refused_before_training(reg, monkeypatch, case_id, build, match):
    _no_training(monkeypatch)
    before = _snapshot(reg)
    with pytest.raises(TrainingDataError) as ei:
        finetune_job(load_model(reg.get("tiny").path), build(), _cfg(), reg)
    assert isinstance(ei.value, AttnsegError) and re.search(match, str(ei.value)), str(ei.value)
    assert _snapshot(reg) == before


def test_empty_labels_would_have_scored_a_perfect_dice(reg):
    """Why the refusal matters: the validation of "predict nothing" on empty truth is 1.0."""
    from napari_attnseg.training.dataset import prepare_pairs
    from napari_attnseg.training.loop import evaluate_dice

    base = load_model(reg.get("tiny").path)
    items = prepare_pairs([_pair(labels=NO_FG)], base.spec, 2)
    zero = tiny_net()
    with torch.no_grad():
        zero.head.bias[:] = torch.tensor([10.0, -10.0])  # predicts background everywhere
    assert evaluate_dice(zero, items, 2) == 1.0


def test_a_renamed_copy_never_takes_another_models_name(reg, tmp_path, monkeypatch):
    copy = tmp_path / "my-copy"
    shutil.copytree(reg.get("tiny").path, copy)  # config.json still says "tiny"
    base = load_model(copy)
    _no_training(monkeypatch)
    before = _snapshot(reg)
    with pytest.raises(ModelError) as ei:  # ERROR: no name, no identity
        finetune_job(base, [_pair()], _cfg(), reg)
    msg = str(ei.value)
    assert str(copy) in msg and "not a version in the registry" in msg and "--name" in msg
    assert _snapshot(reg) == before
    _outcome(monkeypatch, improved=True)
    res = drain(finetune_job(base, [_pair()], _cfg(), reg, name="mine"))  # CORRECT: its own name
    assert res.entry.ref == "mine@1" and res.activated
    assert [e.version for e in reg.versions("tiny")] == ["1"] and reg.get("tiny").version == "1"


def test_a_copy_renamed_inside_the_registry_uses_its_folder_identity(reg, monkeypatch):
    other = reg.root / "other" / "1"
    shutil.copytree(reg.get("tiny").path, other)  # config.json says "tiny", the folder "other"
    _outcome(monkeypatch, improved=True)
    res = drain(finetune_job(load_model(other), [_pair()], _cfg(), reg))
    assert res.entry.ref == "other@2" and res.activated  # CORRECT
    assert [e.version for e in reg.versions("tiny")] == ["1"] and reg.get("tiny").version == "1"


def test_an_explicit_name_with_a_foreign_base_is_saved_but_not_activated(reg, tmp_path, monkeypatch):
    copy = tmp_path / "elsewhere"
    shutil.copytree(reg.get("tiny").path, copy)
    _outcome(monkeypatch, improved=True)
    res = drain(finetune_job(load_model(copy), [_pair()], _cfg(), reg, name="tiny"))
    assert res.entry.ref == "tiny@2" and not res.activated  # WARNING: stated caveat
    assert "is not the version 'tiny' refers to (tiny@1)" in res.note and reg.get("tiny").version == "1"


@pytest.mark.parametrize("how", ["corrupt", "dangling", "deleted"])
def test_a_broken_active_json_is_reported_before_training(reg, monkeypatch, how):
    reg.add_version("tiny", tiny_net(1), tiny_spec())
    path = reg.root / "tiny" / "active.json"
    {"corrupt": lambda: path.write_text("{x"), "dangling": lambda: path.write_text('{"version": "9"}'),
     "deleted": path.unlink}[how]()
    base = load_model(reg.get("tiny", 1).path)
    _no_training(monkeypatch)
    with pytest.raises(ModelError) as ei:  # ERROR
        finetune_job(base, [_pair()], _cfg(), reg)
    assert str(path) in str(ei.value)


@pytest.mark.parametrize("name", ["../evil", "/abs", "a b", ""])
def test_an_invalid_name_is_refused_before_training(reg, monkeypatch, name):
    _no_training(monkeypatch)
    with pytest.raises(ModelError, match="invalid model name"):
        finetune_job(load_model(reg.get("tiny").path), [_pair()], _cfg(), reg, name=name)


def test_an_unwritable_registry_is_reported_before_training(reg, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    ro = ModelRegistry(blocker / "models", shipped_root=tmp_path / "none")
    _no_training(monkeypatch)
    with pytest.raises(WriteError) as ei:  # ERROR
        finetune_job(load_model(reg.get("tiny").path), [_pair()], _cfg(), ro, name="tiny")
    assert "not writable" in str(ei.value) and str(blocker) in str(ei.value)


# =========================================================================== what is saved / activated
OUTCOME_CASES = [  # (id, reviewed slices, outcome, changes, result class, versions after, active after, note)
    ("improved-2-val-slices", None, True, {}, CORRECT, ["1", "2"], "2", r"saved as tiny@2, now active"),
    ("improved-1-val-slice", [0, 1, 2], True, {}, WARNING, ["1", "2"], "1",
     r"NOT activated because it was validated on a single slice"),
    ("improved-but-stopped", None, True, {"stopped": "stopped"}, WARNING, ["1", "2"], "1",
     r"NOT activated because training was stopped"),
    ("not-improved", None, False, {}, CORRECT, ["1"], "1", r"no improvement.*nothing saved; tiny@1 stays active"),
    ("worse", None, None, {"best_epoch": 1, "best_val_dice": lambda r: r.initial_val_dice - 0.2}, CORRECT,
     ["1"], "1", r"nothing saved"),
    ("equal", None, None, {"best_epoch": 1, "best_val_dice": lambda r: r.initial_val_dice}, CORRECT, ["1"], "1",
     r"nothing saved"),
    ("nan-dice", None, None, {"best_epoch": 1, "best_val_dice": float("nan")}, CORRECT, ["1"], "1",
     r"nothing saved"),
]


@pytest.mark.parametrize("case_id,reviewed,improved,changes,klass,versions,active,note", OUTCOME_CASES,
                         ids=[c[0] for c in OUTCOME_CASES])
def test_what_a_finetune_saves_and_activates(reg, monkeypatch, case_id, reviewed, improved, changes, klass,
                                             versions, active, note):
    _outcome(monkeypatch, improved, **changes)
    before = _snapshot(reg)
    res = drain(finetune_job(load_model(reg.get("tiny").path), [_pair(reviewed)], _cfg(), reg))
    assert re.search(note, res.note), res.note
    assert [e.version for e in reg.versions("tiny")] == versions and reg.get("tiny").version == active
    assert res.activated == (klass == CORRECT and res.entry is not None)
    if res.entry is None:  # nothing improved: the registry is byte-identical
        assert res.unchanged and _snapshot(reg) == before
    else:
        prov = load_model(res.entry.path).spec.provenance
        assert prov["activated"] == res.activated and prov["validation"]["slices"] == res.val_slices
        assert prov["validation"]["foreground_voxels"] > 0


def test_validation_slices_always_hold_foreground(reg, monkeypatch):
    _outcome(monkeypatch, improved=True)
    fg = [1, 4]
    res = drain(finetune_job(load_model(reg.get("tiny").path), [_pair(fg_slices=fg)], _cfg(), reg))
    val = [s for p in res.split["validation"] for s in p["slices"]]
    train = [s for p in res.split["train"] for s in p["slices"]]
    assert set(val) & set(fg) and set(train) & set(fg)  # CORRECT: both sides can be scored
    assert len(val) == 2 and res.activated


# =========================================================================== attnseg finetune
def _files(tmp_path, labels=None, dtype=np.uint8):
    nib = pytest.importorskip("nibabel")
    img, lab = phantom()
    data = lab.data if labels is None else labels
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    ip, lp = tmp_path / "scan.nii.gz", tmp_path / "scan_seg.nii.gz"
    nib.save(nib.Nifti1Image(img.data.T.copy(), aff), str(ip))
    nib.save(nib.Nifti1Image(np.asarray(data).T.astype(dtype), aff), str(lp))
    return ip, lp


def _cli(capsys, *argv) -> tuple[int, str, str]:
    from napari_attnseg.cli import main

    rc = main(["finetune", *map(str, argv), "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2",
               "--patch-size", "16", "16", "--threads", "1", "-q"])
    out = capsys.readouterr()
    return rc, out.out, out.err


CLI_CASES = [  # (id, labels data, dtype, extra args, regex on stderr): every one exit 2, one line
    ("reviewed-empty", None, np.uint8, ["--reviewed-slices", ""], r"--reviewed-slices '' lists no slice"),
    ("reviewed-comma", None, np.uint8, ["--reviewed-slices", ","], r"lists no slice"),
    ("reviewed-words", None, np.uint8, ["--reviewed-slices", "a,b"], r"comma-separated integers"),
    ("reviewed-outside", None, np.uint8, ["--reviewed-slices", "2,99"], r"\[99\] are outside 0\.\.5"),
    ("float-half-mask", 0.5 * (phantom()[1].data > 0), np.float32, [], r"scan_seg.nii.gz.*non-integer values \(e\.g\. 0\.5\)"),
    ("float-1.3", 1.3 * (phantom()[1].data > 0), np.float32, [], r"non-integer values \(e\.g\. 1\.3\)"),
    ("empty-labels", np.zeros((6, 20, 24)), np.uint8, [], r"scan_seg.nii.gz: the reviewed slices hold no foreground"),
    ("name-path", None, np.uint8, ["--name", "../evil"], r"invalid model name '\.\./evil'"),
    ("base-ref-escape", None, np.uint8, ["--base", "tiny@../evil"], r"invalid version '\.\./evil'"),
]


@pytest.mark.parametrize("case_id,labels,dtype,extra,match", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_is_one_clear_line(reg, tmp_path, monkeypatch, capsys, case_id, labels, dtype, extra, match):
    monkeypatch.setenv("ATTNSEG_MODELS", str(reg.root))
    _no_training(monkeypatch)
    ip, lp = _files(tmp_path, labels, dtype)
    base = ["--base", "tiny"] if "--base" not in extra else []
    before = _snapshot(reg)
    rc, out, err = _cli(capsys, ip, lp, *base, *extra)
    assert rc == 2 and re.search(match, err), err  # ERROR
    assert err.startswith("attnseg finetune: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert _snapshot(reg) == before


def test_cli_renamed_copy_and_outcomes(reg, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATTNSEG_MODELS", str(reg.root))
    ip, lp = _files(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(reg.get("tiny").path, copy)
    rc, _, err = _cli(capsys, ip, lp, "--base", copy)  # ERROR: a copy needs --name
    assert rc == 2 and "not a version in the registry" in err and "--name" in err
    _outcome(monkeypatch, improved=False)
    rc, out, _ = _cli(capsys, ip, lp, "--base", "tiny", "-o", tmp_path / "new")  # CORRECT: nothing saved
    assert rc == 0 and "nothing saved" in out and "not written" in out and not (tmp_path / "new").exists()
    assert [e.version for e in reg.versions("tiny")] == ["1"]
    _outcome(monkeypatch, improved=True)
    rc, out, _ = _cli(capsys, ip, lp, "--base", copy, "--name", "mine", "-o", tmp_path / "new")
    assert rc == 0 and "saved as mine@1, now active" in out  # CORRECT
    assert json.loads((tmp_path / "new" / "config.json").read_text())["name"] == "mine"
    assert reg.get("tiny").version == "1" and [e.version for e in reg.versions("tiny")] == ["1"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the -o copy left no temp folder
    assert Path(reg.get("mine").path).is_dir()

