"""Temporary names that say who wrote them, their clean-up, and atomic small-file writes.

Every temporary entry the model folders and the registry create is hidden and named
``.<target>.<kind>-<pid>-<host>-<random>`` (:func:`temp_name`; ``kind`` is ``tmp`` for a file or
folder being written, ``old`` for one being replaced, ``stage`` for a complete model version not
yet committed). A process that was killed leaves such entries behind; :func:`clean_stale`
removes those whose writer is gone (checked by process id on the same host), so a live writer
in another process is never disturbed; an ``old`` entry whose target is missing (killed in the
middle of an overwrite) is renamed back instead. Entries in the older ``.<target>.tmp-<random>`` form (no
process id) are removed once they are an hour old.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TEMP_RE = re.compile(r"^\.(?P<target>.+)\.(?P<kind>tmp|old|stage)-(?P<pid>\d+)-(?P<host>[0-9a-f]{6})-[0-9a-f]{8}$")
LEGACY_TEMP_RE = re.compile(r"^\.(?P<target>.+)\.(?P<kind>tmp|old)-[0-9a-f]{8}$")
LEGACY_MAX_AGE_S = 3600.0

__all__ = ["clean_stale", "host_key", "temp_name", "write_json_atomic", "writer_alive"]


def host_key() -> str:
    """Six hex digits naming this machine (temporary names record which host wrote them)."""
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


def temp_name(target: str, kind: str = "tmp") -> str:
    """A hidden name for a temporary entry beside ``target``: ``.<target>.<kind>-<pid>-<host>-<random>``."""
    return f".{target}.{kind}-{os.getpid()}-{host_key()}-{uuid.uuid4().hex[:8]}"


def writer_alive(pid: int, host: str) -> bool:
    """Whether the process that wrote a :func:`temp_name` entry may still be running (True for
    another host, whose processes cannot be checked, and for this process)."""
    if host != host_key() or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's live process
        return True
    return True


def is_stale(entry: Path, now: float | None = None) -> bool:
    """Whether ``entry`` is a temporary entry left by a writer that is gone."""
    m = TEMP_RE.match(entry.name)
    if m:
        return not writer_alive(int(m["pid"]), m["host"])
    if LEGACY_TEMP_RE.match(entry.name):
        try:
            age = (time.time() if now is None else now) - entry.lstat().st_mtime
        except OSError:
            return False
        return age > LEGACY_MAX_AGE_S
    return False


def clean_stale(folder: Path) -> list[Path]:
    """Remove the stale temporary entries directly inside ``folder``; returns what was removed.

    Never raises: a folder that cannot be listed or an entry that cannot be removed (read-only
    registry) is logged and left alone."""
    removed: list[Path] = []
    try:
        entries = [p for p in folder.iterdir() if p.name.startswith(".")]
    except OSError:
        return removed
    for entry in entries:
        if not is_stale(entry):
            continue
        m = TEMP_RE.match(entry.name) or LEGACY_TEMP_RE.match(entry.name)
        target = folder / m["target"]
        if m["kind"] == "old" and not os.path.lexists(target):
            try:  # killed between moving the old entry aside and renaming the new one in: roll back
                os.replace(entry, target)
                logger.info("restored %s from %s (an interrupted overwrite)", target, entry.name)
                continue
            except OSError as exc:
                logger.warning("could not restore %s from %s: %s", target, entry, exc)
                continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError as exc:
            logger.warning("could not remove the leftover temporary %s: %s", entry, exc)
            continue
        logger.info("removed %s, left behind by an interrupted save", entry)
        removed.append(entry)
    return removed


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file renamed into place (a reader
    sees the old content or the new one, never a part). Raises ``OSError``."""
    tmp = path.parent / temp_name(path.name)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
