"""A local, versioned registry of model folders. Nothing is ever downloaded.

Layout (``root`` is ``$ATTNSEG_MODELS`` if set, else ``~/.napari-attnseg/models``)::

    root/<name>/<version>/{config.json, weights.pt}     one model folder per version (1, 2, ...)
    root/<name>/active.json                             {"version": "2"}: the version to use

Read-only *shipped* models (package data) live in ``napari_attnseg/models/<name>/<version>/``
and are listed too (``shipped=True``); user versions of the same name continue their
numbering, and ``active.json`` for any name lives in the user root. A model is named on the
command line or in the GUI as ``"name"``, ``"name@3"`` or a folder path
(:meth:`ModelRegistry.resolve`).

**What "name" means** (:meth:`ModelRegistry.get`; the no-``--model`` default follows the same
rule): the version ``active.json`` records; without that file, the only version, or the latest
*shipped* version when every version is shipped. Anything else is an error that says how to fix
it, never a silent fall-back: a corrupt ``active.json``, one naming a version that does not exist,
or a missing one while user versions exist (adding a version that is not activated records the
previous choice first, so this only happens when the file was deleted). Names and versions are
plain words (letters, digits, ``.``, ``_``, ``-``): ``name@../x`` or ``/abs`` cannot reach
outside the registry.

**Crash safety.** A version is written completely into a hidden staging folder, then renamed into
place (the commit); activating it is recorded by a marker file inside the staged folder that the
registry removes once ``active.json`` names the version. A registry opened after a writer was
killed finishes such an activation (if ``active.json`` still names what it named before) and
removes the hidden leftovers of dead writers (:mod:`._atomic`), so a SIGKILL at any moment leaves
either the old complete state or the new one.

Listing reads only the small ``config.json`` files; torch is imported only to save a model.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError
from ._names import (ACTIVE_FILE, ENV_VAR, VERSION_RE, check_name, check_version, valid_name,
                     version_key)
from .registry_write import RegistryWriter

logger = logging.getLogger(__name__)

DEFAULT_ROOT = Path("~/.napari-attnseg/models")
SHIPPED_ROOT = Path(__file__).resolve().parents[1] / "models"
_CONFIG = "config.json"
#: The shipped model :meth:`ModelRegistry.default_model` prefers (when no modality matches).
DEFAULT_MODEL_NAME = "ct-phantom-2d"

__all__ = ["ACTIVE_FILE", "DEFAULT_MODEL_NAME", "ENV_VAR", "ModelEntry", "ModelRegistry", "check_name",
           "check_version", "default_root"]


def default_root() -> Path:
    """``$ATTNSEG_MODELS`` if set (and not empty), else ``~/.napari-attnseg/models``."""
    env = os.environ.get(ENV_VAR, "").strip()
    return Path(env).expanduser() if env else DEFAULT_ROOT.expanduser()


@dataclass(frozen=True)
class ModelEntry:
    """One version of one model in the registry."""

    name: str
    version: str
    path: Path
    shipped: bool
    parent: str | None = None
    created: str = ""

    @property
    def ref(self) -> str:
        """``"name@version"``, the string :meth:`ModelRegistry.resolve` accepts."""
        return f"{self.name}@{self.version}"




class ModelRegistry(RegistryWriter):
    """Versions of user models under ``root`` plus read-only shipped models.

    ``root``: default :func:`default_root` (honours ``$ATTNSEG_MODELS``); it is created only
    when a model is added. ``shipped_root``: the package's ``models/`` folder (for tests).
    Opening a registry finishes the activations and removes the temporary leftovers of writers
    that were killed (see the module docstring).
    """

    def __init__(self, root: str | Path | None = None, shipped_root: str | Path | None = None):
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.shipped_root = Path(shipped_root) if shipped_root is not None else SHIPPED_ROOT
        self.recover()


    def __repr__(self) -> str:
        return f"ModelRegistry(root={str(self.root)!r})"

    # ------------------------------------------------------------------ listing
    @staticmethod
    def _config_of(path: Path) -> dict:
        """The raw config.json of a version folder ({} when unreadable; the error is logged and
        reported in full when the model is loaded)."""
        from .config_check import parse_config

        try:
            return parse_config((path / _CONFIG).read_bytes(), path / _CONFIG)
        except (OSError, ModelError) as exc:
            logger.warning("model folder %s has an unreadable %s: %s", path, _CONFIG, exc)
            return {}

    def _entry(self, path: Path, shipped: bool) -> ModelEntry:
        config = self._config_of(path)
        parent = config.get("parent")
        return ModelEntry(path.parent.name, path.name, path, shipped, parent if isinstance(parent, str) else None,
                          str(config.get("created", "")))

    @staticmethod
    def _version_dirs(base: Path) -> list[Path]:
        if not base.is_dir():
            return []
        return [p for p in base.iterdir() if VERSION_RE.match(p.name) and p.is_dir() and (p / _CONFIG).is_file()]

    def _names(self) -> list[str]:
        names = set()
        for base in (self.root, self.shipped_root):
            if base.is_dir():
                names.update(p.name for p in base.iterdir() if valid_name(p.name) and p.is_dir())
        return sorted(n for n in names if self._version_dirs(self.root / n) or self._version_dirs(self.shipped_root / n))

    def versions(self, name: str) -> list[ModelEntry]:
        """All versions of ``name``, oldest first (a user version shadows a shipped one of the same number)."""
        name = check_name(name)
        found: dict[str, ModelEntry] = {}
        for p in self._version_dirs(self.shipped_root / name):
            found[p.name] = self._entry(p, shipped=True)
        for p in self._version_dirs(self.root / name):
            found[p.name] = self._entry(p, shipped=False)
        return [found[v] for v in sorted(found, key=version_key)]

    def list_models(self) -> list[ModelEntry]:
        """Every version of every model, sorted by name then version."""
        return [e for n in self._names() for e in self.versions(n)]

    # ------------------------------------------------------------------ lookup
    def _unknown_name(self, name: str) -> ModelError:
        names = self._names()
        near = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        listed = ", ".join(names) if names else "none"
        return ModelError(f"no model named '{name}' in the registry {self.root} (models: {listed}){hint}")

    def get(self, name: str, version: str | int | None = None) -> ModelEntry:
        """One version of ``name``: ``version``, else the version "name" refers to (see the
        module docstring: ``active.json``, else the only version, else the latest shipped one
        when all are shipped; otherwise :class:`ModelError` saying how to choose)."""
        entries = self.versions(name)
        if not entries:
            raise self._unknown_name(name)
        if version is None:
            active = self.active(name)
            if active is not None:
                return active
            if len(entries) == 1 or all(e.shipped for e in entries):
                return entries[-1]
            path = self.root / name / ACTIVE_FILE
            raise ModelError(
                f"model '{name}' has versions {', '.join(e.version for e in entries)} but no active version: {path} "
                f"is missing (deleted?). Choose one explicitly with '{name}@N', or make one the default by writing "
                f'{{"version": "N"}} to {path}'
            )
        version = check_version(version)
        for e in entries:
            if e.version == version:
                return e
        raise ModelError(
            f"model '{name}' has no version {version} (versions: {', '.join(e.version for e in entries)})"
        )

    def active(self, name: str) -> ModelEntry | None:
        """The version recorded in ``<root>/<name>/active.json`` (:meth:`set_active`), or ``None``
        when there is no such file. A corrupt file, or one naming a version that does not exist,
        raises :class:`ModelError` saying how to fix it (never a silent fall-back)."""
        name = check_name(name)
        path = self.root / name / ACTIVE_FILE
        if not os.path.lexists(path):
            return None
        entries = self.versions(name)
        listed = ", ".join(e.version for e in entries) or "none"
        fix = (f'write {{"version": "N"}} to it with N one of the versions ({listed}), or choose a version '
               f"explicitly with '{name}@N'")
        try:
            if path.stat().st_size > 4096:
                raise ValueError(f"{path.stat().st_size} bytes, far more than a version number")
            record = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(record, dict) or "version" not in record:
                raise ValueError('expected {"version": "N"}')
            version = check_version(record["version"])
        except (OSError, UnicodeDecodeError, ValueError, RecursionError, ModelError) as exc:
            raise ModelError(f"{path}, which records the active version of '{name}', is corrupt ({exc}); {fix}") from None
        for e in entries:
            if e.version == version:
                return e
        raise ModelError(f"{path} makes version {version} of '{name}' the active one, but that version does not "
                         f"exist (deleted?); {fix}")

    def _shipped_latest(self) -> list[ModelEntry]:
        """The latest shipped version of every shipped name, by name."""
        if not self.shipped_root.is_dir():
            return []
        out = []
        for base in sorted(p for p in self.shipped_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            dirs = self._version_dirs(base)
            if dirs:
                out.append(self._entry(max(dirs, key=lambda p: version_key(p.name)), shipped=True))
        return out

    @staticmethod
    def _modality(entry: ModelEntry) -> str:
        """The ``modality`` of an entry's config.json ("" when absent or unreadable)."""
        try:
            config = json.loads((entry.path / _CONFIG).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            logger.warning("model folder %s has an unreadable %s: %s", entry.path, _CONFIG, exc)
            return ""
        value = config.get("modality") if isinstance(config, dict) else None
        return str(value or "").strip()

    def default_model(self, modality: str | None = None) -> ModelEntry | None:
        """The default model: what a shipped model's name refers to (:meth:`get`: its active
        version, e.g. a fine-tune that beat its parent, else its latest shipped version; a broken
        ``active.json`` raises :class:`ModelError`); ``None`` if no model is shipped.

        With ``modality`` (e.g. ``"US"``, case-insensitive), the first shipped model whose
        config.json names that modality (only the small config files are read); when none
        matches, or without ``modality``: :data:`DEFAULT_MODEL_NAME` if shipped, else the first
        shipped name alphabetically.
        """
        shipped = self._shipped_latest()
        if not shipped:
            return None
        wanted = str(modality or "").strip().upper()
        chosen = None
        if wanted:
            chosen = next((e for e in shipped if self._modality(e).upper() == wanted), None)
        if chosen is None:
            chosen = next((e for e in shipped if e.name == DEFAULT_MODEL_NAME), shipped[0])
        # the same rule as "name" everywhere: a fine-tuned version the user activated (it beat its
        # parent) replaces the shipped one; a broken active.json is an error, not the shipped v1
        return self.get(chosen.name)

    def resolve(self, spec_str: str | Path) -> Path:
        """A model folder from ``"name"``, ``"name@version"`` or a folder path.

        ``name`` and ``version`` must be plain words (:func:`check_name`, :func:`check_version`):
        ``"name@../x"`` is an error, never a path. A text with a path separator (or starting
        with ``~`` or ``.``) is a folder path; a bare word that is no registry name but a folder
        holding a config.json in the working directory is that folder."""
        if isinstance(spec_str, Path):
            return self._folder(spec_str)
        text = str(spec_str).strip()
        if not text:
            raise ModelError("no model given: use 'name', 'name@version' or a model folder path")
        name, sep, version = text.partition("@")
        if valid_name(name):
            if sep:
                if not version:
                    raise ModelError(f"'{text}': give a version after '@', e.g. '{name}@1'")
                if not VERSION_RE.match(version) or len(version) > 64:
                    raise ModelError(f"'{text}': invalid version '{version}'; a version is a number such as 1 "
                                     "(a registry reference cannot name a path)")
                return self.get(name, version).path
            if self.versions(name):
                return self.get(name).path
            if (Path(text) / _CONFIG).is_file():
                return Path(text)
            raise self._unknown_name(name)
        if "/" in text or os.sep in text or text.startswith(("~", ".")):
            return self._folder(Path(text).expanduser())
        raise ModelError(f"'{text}' is neither a model name (letters, digits, '.', '_' or '-'; 'name@version') "
                         "nor a model folder path")

    @staticmethod
    def _folder(path: Path) -> Path:
        path = Path(path).expanduser()
        if not path.is_dir():
            raise ModelError(f"model folder {path} does not exist")
        return path

    def identify(self, folder: str | Path | None) -> ModelEntry | None:
        """The registry entry ``folder`` is (a user or shipped version folder, symlinks
        resolved), or ``None`` for a folder outside the registry, e.g. a renamed copy. The
        identity comes from where the folder is, never from the name its config.json states."""
        if folder is None:
            return None
        try:
            real = Path(folder).expanduser().resolve()
        except (OSError, RuntimeError):
            return None
        name, version = real.parent.name, real.name
        if not (valid_name(name) and VERSION_RE.match(version)):
            return None
        for base in (self.root, self.shipped_root):
            try:
                inside = real.parent.parent == base.expanduser().resolve()
            except (OSError, RuntimeError):
                continue
            if inside:
                for e in self.versions(name):
                    if e.version == version and e.path.resolve() == real:
                        return e
        return None

