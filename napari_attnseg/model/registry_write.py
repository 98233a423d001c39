"""How the registry writes: versions committed crash-safely, activation, recovery after a kill.

A version is saved completely into a hidden staging folder ``<root>/<name>/.<N>.stage-<pid>-...``
(:func:`~napari_attnseg.model.checkpoint.save_model`, itself atomic), then renamed to
``<root>/<name>/<N>`` in one step: the commit. Before the commit, a version that will not be
active records what the name referred to until then in ``active.json`` (so the new version does
not change it); one that will be active gets a marker file ``.activate`` (writer's pid and host,
and the active version it replaces). After the commit ``active.json`` is rewritten atomically and
the marker removed. :meth:`RegistryWriter.recover`, run whenever a registry is opened, completes
the activation of a committed version whose writer died (if ``active.json`` still names the
version the marker recorded) and removes the temporary entries of dead writers. So a SIGKILL at
any moment leaves the old complete state (killed before the commit) or the new one (after it).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelError, WriteError
from ._atomic import clean_stale, host_key, temp_name, write_json_atomic, writer_alive
from ._names import ACTIVATE_MARKER, ACTIVE_FILE, ENV_VAR, check_name, valid_name, version_key

if TYPE_CHECKING:
    from .attention_unet import AttentionUNet
    from .checkpoint import ModelSpec
    from .registry import ModelEntry

logger = logging.getLogger(__name__)

__all__ = ["RegistryWriter"]


class RegistryWriter:
    """The writing half of :class:`~napari_attnseg.model.registry.ModelRegistry` (a mixin: it
    uses ``root``, ``versions``, ``get``, ``active`` and ``_entry`` of the registry)."""

    root: Path

    # ------------------------------------------------------------------ crash recovery
    def recover(self) -> None:
        """Finish activations whose writer died after the commit and remove dead writers'
        temporary entries. Never raises (a read-only registry is left as it is)."""
        try:
            folders = [p for p in self.root.iterdir() if valid_name(p.name) and p.is_dir()]
        except OSError:
            return
        for folder in folders:
            clean_stale(folder)
            try:
                marked = sorted((p for p in folder.iterdir() if (p / ACTIVATE_MARKER).is_file()),
                                key=lambda p: version_key(p.name))
            except OSError:
                continue
            for version_dir in marked:
                self._finish_activation(folder, version_dir)

    def _finish_activation(self, folder: Path, version_dir: Path) -> None:
        marker = version_dir / ACTIVATE_MARKER
        try:
            record = json.loads(marker.read_text(encoding="utf-8"))
            pid, host, previous = int(record["pid"]), str(record["host"]), record.get("previous")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring the unreadable activation marker %s: %s", marker, exc)
            return
        if writer_alive(pid, host):
            return  # still being written by a live process
        path = folder / ACTIVE_FILE
        try:
            current = json.loads(path.read_text(encoding="utf-8"))["version"] if path.exists() else None
            current = None if current is None else str(current)
        except (OSError, ValueError, KeyError, TypeError):
            return  # corrupt active.json: reported by active(); nothing to compare with
        try:
            if current == previous:  # nobody changed the active version since: roll forward
                write_json_atomic(path, {"version": version_dir.name})
                logger.info("finished the interrupted activation of %s@%s", folder.name, version_dir.name)
            marker.unlink()
        except OSError as exc:
            logger.warning("could not finish the activation of %s: %s", version_dir, exc)

    # ------------------------------------------------------------------ writing
    def check_writable(self, name: str) -> Path:
        """Check now, before any work, that a version of ``name`` can be saved: the folder
        ``<root>/<name>`` is created if needed and a probe file written and removed. Returns the
        folder; :class:`WriteError` saying what to do otherwise."""
        folder = self.root / check_name(name)
        probe = folder / temp_name("write-check")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise WriteError(folder, f"the model registry is not writable ({exc.strerror or exc}); make it "
                                     f"writable or set {ENV_VAR} to a writable folder") from exc
        return folder

    def _pin_current(self, name: str) -> None:
        """Record what ``name`` refers to now in active.json (if not recorded yet), so that a new
        version that is not activated does not change it."""
        folder = self.root / name
        if os.path.lexists(folder / ACTIVE_FILE) or not self.versions(name):
            return
        try:
            current = self.get(name)
        except ModelError as exc:  # already ambiguous: nothing to pin; the lookup will say so
            logger.warning("not recording an active version of '%s': %s", name, exc)
            return
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / ACTIVE_FILE, {"version": current.version})

    def add_version(
        self, name: str, network: AttentionUNet, spec: ModelSpec, parent: str | None = None, *,
        activate: bool = False,
    ) -> ModelEntry:
        """Save ``network`` as the next integer version of ``name`` (atomic); returns its entry.

        The saved spec gets ``name``, the new ``version`` and ``parent`` (if given; e.g. the
        ``model_id`` it was fine-tuned from). ``activate``: make it the version "name" refers
        to, in the same crash-safe step; otherwise what "name" refers to is unchanged (recorded
        in active.json first if it was implicit). See the module docstring for the protocol.
        """
        from .checkpoint import save_model

        name = check_name(name)
        base = self.root / name
        for _attempt in range(5):
            numbers = [int(e.version) for e in self.versions(name) if e.version.isdigit()]
            if base.is_dir():  # also skip numbers of stray folders (e.g. a half-deleted version)
                numbers += [int(p.name) for p in base.iterdir() if p.name.isdigit()]
            version = str(max(numbers, default=0) + 1)
            new_spec = replace(spec, name=name, version=version, parent=parent if parent is not None else spec.parent)
            target = base / version
            if target.exists():  # a folder without config.json, or another process was quicker
                continue
            stage = base / temp_name(version, "stage")
            try:
                save_model(stage, network, new_spec)
                try:
                    if activate:
                        previous = self.active(name)
                        write_json_atomic(stage / ACTIVATE_MARKER, {
                            "pid": os.getpid(), "host": host_key(),
                            "previous": previous.version if previous is not None else None})
                    else:
                        self._pin_current(name)
                    if target.exists():
                        continue
                    os.rename(stage, target)  # the commit
                except OSError as exc:
                    if target.exists():
                        continue
                    raise WriteError(target, f"could not save the model: {exc}") from exc
            finally:
                if stage.exists():
                    shutil.rmtree(stage, ignore_errors=True)
            if activate:
                self._activate_committed(name, target)
            logger.info("added model %s@%s at %s%s", name, version, target, " (active)" if activate else "")
            return self._entry(target, shipped=False)
        raise WriteError(self.root / name, "could not find a free version number (concurrent writers?)")

    def _activate_committed(self, name: str, target: Path) -> None:
        try:
            write_json_atomic(self.root / name / ACTIVE_FILE, {"version": target.name})
            (target / ACTIVATE_MARKER).unlink()
        except OSError as exc:
            raise WriteError(self.root / name / ACTIVE_FILE,
                             f"{name}@{target.name} was saved but could not be made active: {exc}") from exc

    def set_active(self, name: str, version: str | int) -> ModelEntry:
        """Make ``version`` the one :meth:`get` returns for ``name``; returns its entry."""
        name = check_name(name)
        entry = self.get(name, version)
        folder = self.root / name
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(folder / ACTIVE_FILE, {"version": entry.version})
        except OSError as exc:
            raise WriteError(folder / ACTIVE_FILE, f"could not record the active version: {exc}") from exc
        return entry
