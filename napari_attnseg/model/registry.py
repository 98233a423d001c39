"""A local, versioned registry of model folders. Nothing is ever downloaded.

Layout (``root`` is ``$ATTNSEG_MODELS`` if set, else ``~/.napari-attnseg/models``)::

    root/<name>/<version>/{config.json, weights.pt}     one model folder per version (1, 2, ...)
    root/<name>/active.json                             {"version": "2"}: the version to use

Read-only *shipped* models (package data) live in ``napari_attnseg/models/<name>/<version>/``
and are listed too (``shipped=True``); user versions of the same name continue their
numbering, and ``active.json`` for any name lives in the user root. A model is named on the
command line or in the GUI as ``"name"`` (its active version, else its latest),
``"name@3"`` or a folder path (:meth:`ModelRegistry.resolve`).

Listing reads only the small ``config.json`` files; torch is imported only to save a model.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelError, WriteError

if TYPE_CHECKING:
    from .attention_unet import AttentionUNet
    from .checkpoint import ModelSpec

logger = logging.getLogger(__name__)

ENV_VAR = "ATTNSEG_MODELS"
DEFAULT_ROOT = Path("~/.napari-attnseg/models")
SHIPPED_ROOT = Path(__file__).resolve().parents[1] / "models"
ACTIVE_FILE = "active.json"
_CONFIG = "config.json"
#: The shipped model :meth:`ModelRegistry.default_model` prefers (when no modality matches).
DEFAULT_MODEL_NAME = "ct-phantom-2d"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

__all__ = ["DEFAULT_MODEL_NAME", "ENV_VAR", "ModelEntry", "ModelRegistry", "default_root"]


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


def _version_key(version: str) -> tuple:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def _check_name(name: str) -> str:
    name = str(name)
    if not _NAME_RE.match(name) or name.endswith(".json"):
        raise ValueError(
            f"invalid model name '{name}': use letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


class ModelRegistry:
    """Versions of user models under ``root`` plus read-only shipped models.

    ``root``: default :func:`default_root` (honours ``$ATTNSEG_MODELS``); it is created only
    when a model is added. ``shipped_root``: the package's ``models/`` folder (for tests).
    """

    def __init__(self, root: str | Path | None = None, shipped_root: str | Path | None = None):
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.shipped_root = Path(shipped_root) if shipped_root is not None else SHIPPED_ROOT

    def __repr__(self) -> str:
        return f"ModelRegistry(root={str(self.root)!r})"

    # ------------------------------------------------------------------ listing
    def _entry(self, path: Path, shipped: bool) -> ModelEntry:
        parent, created = None, ""
        try:
            config = json.loads((path / _CONFIG).read_text(encoding="utf-8"))
            if isinstance(config, dict):
                parent = config.get("parent")
                created = str(config.get("created", ""))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            logger.warning("model folder %s has an unreadable %s: %s", path, _CONFIG, exc)
        return ModelEntry(path.parent.name, path.name, path, shipped, parent, created)

    @staticmethod
    def _version_dirs(base: Path) -> list[Path]:
        if not base.is_dir():
            return []
        return [p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / _CONFIG).is_file()]

    def _names(self) -> list[str]:
        names = set()
        for base in (self.root, self.shipped_root):
            if base.is_dir():
                names.update(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
        return sorted(n for n in names if self._version_dirs(self.root / n) or self._version_dirs(self.shipped_root / n))

    def versions(self, name: str) -> list[ModelEntry]:
        """All versions of ``name``, oldest first (a user version shadows a shipped one of the same number)."""
        found: dict[str, ModelEntry] = {}
        for p in self._version_dirs(self.shipped_root / name):
            found[p.name] = self._entry(p, shipped=True)
        for p in self._version_dirs(self.root / name):
            found[p.name] = self._entry(p, shipped=False)
        return [found[v] for v in sorted(found, key=_version_key)]

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
        """One version of ``name``: ``version``, else the active version, else the latest."""
        entries = self.versions(name)
        if not entries:
            raise self._unknown_name(name)
        if version is None:
            active = self.active(name)
            return active if active is not None else entries[-1]
        for e in entries:
            if e.version == str(version):
                return e
        raise ModelError(
            f"model '{name}' has no version {version} (versions: {', '.join(e.version for e in entries)})"
        )

    def active(self, name: str) -> ModelEntry | None:
        """The version chosen with :meth:`set_active`, or ``None`` if none (or it was removed)."""
        path = self.root / name / ACTIVE_FILE
        if not path.is_file():
            return None
        try:
            version = str(json.loads(path.read_text(encoding="utf-8"))["version"])
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            logger.warning("ignoring unreadable %s: %s", path, exc)
            return None
        for e in self.versions(name):
            if e.version == version:
                return e
        logger.warning("%s names version %s of '%s', which no longer exists", path, version, name)
        return None

    def _shipped_latest(self) -> list[ModelEntry]:
        """The latest shipped version of every shipped name, by name."""
        if not self.shipped_root.is_dir():
            return []
        out = []
        for base in sorted(p for p in self.shipped_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            dirs = self._version_dirs(base)
            if dirs:
                out.append(self._entry(max(dirs, key=lambda p: _version_key(p.name)), shipped=True))
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
        """The default model: a shipped model's active version (set by :meth:`set_active`, e.g.
        by a fine-tune that beat its parent), else its latest shipped version; ``None`` if no
        model is shipped.

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
        # a fine-tuned version the user activated (it beat its parent) replaces the shipped one
        return self.active(chosen.name) or chosen

    def resolve(self, spec_str: str | Path) -> Path:
        """A model folder from ``"name"``, ``"name@version"`` or a folder path."""
        if isinstance(spec_str, Path) or os.sep in str(spec_str) or "/" in str(spec_str):
            path = Path(spec_str).expanduser()
            if not path.is_dir():
                raise ModelError(f"model folder {path} does not exist")
            return path
        text = str(spec_str).strip()
        if not text:
            raise ModelError("no model given: use 'name', 'name@version' or a model folder path")
        name, sep, version = text.partition("@")
        if not self.versions(name) and Path(text).expanduser().is_dir():
            return Path(text).expanduser()
        if sep and not version:
            raise ModelError(f"'{text}': give a version after '@', e.g. '{name}@1'")
        return self.get(name, version if sep else None).path

    # ------------------------------------------------------------------ writing
    def add_version(
        self, name: str, network: AttentionUNet, spec: ModelSpec, parent: str | None = None
    ) -> ModelEntry:
        """Save ``network`` as the next integer version of ``name`` (atomic); returns its entry.

        The saved spec gets ``name``, the new ``version`` and ``parent`` (if given; e.g. the
        ``model_id`` it was fine-tuned from). The active version is not changed.
        """
        from .checkpoint import save_model

        name = _check_name(name)
        for _attempt in range(5):
            numbers = [int(e.version) for e in self.versions(name) if e.version.isdigit()]
            user = self.root / name
            if user.is_dir():  # also skip numbers of stray folders (e.g. a half-deleted version)
                numbers += [int(p.name) for p in user.iterdir() if p.name.isdigit()]
            version = str(max(numbers, default=0) + 1)
            new_spec = replace(spec, name=name, version=version, parent=parent if parent is not None else spec.parent)
            target = self.root / name / version
            if target.exists():  # a folder without config.json, or another process was quicker
                continue
            try:
                save_model(target, network, new_spec)
            except WriteError:
                if target.exists():
                    continue
                raise
            logger.info("added model %s@%s at %s", name, version, target)
            return self._entry(target, shipped=False)
        raise WriteError(self.root / name, "could not find a free version number (concurrent writers?)")

    def set_active(self, name: str, version: str | int) -> ModelEntry:
        """Make ``version`` the one :meth:`get` returns for ``name``; returns its entry."""
        entry = self.get(name, version)
        folder = self.root / _check_name(name)
        tmp = folder / f".{ACTIVE_FILE}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"version": entry.version}), encoding="utf-8")
            os.replace(tmp, folder / ACTIVE_FILE)
        except OSError as exc:
            raise WriteError(folder / ACTIVE_FILE, f"could not record the active version: {exc}") from exc
        finally:
            if tmp.exists():
                tmp.unlink()
        return entry
