"""Crash-safe writing of several files as one unit (a mask, its probabilities, their sidecars).

Every file is first written to a temporary name beside its destination
(``.attnseg-tmp-<pid>-<token>-<name>``), flushed and verified. The unit then commits: a journal
(``.attnseg-commit-<pid>-<token>.json``, listing every temp -> destination move) is renamed into
place in the first destination's folder - that rename is the commit point - and the moves
follow. A kill before the commit point leaves the old files untouched (the temps are cleaned
later); a kill after it is rolled forward by :func:`recover_folder`, which every write and every
NIfTI read runs on its folder first, so a reader of these files sees either the old complete
unit or the new complete one. Units spanning several folders leave a copy of the journal in each
(written before the commit point, so that a read in any of them finds the unit). Temporary files
are created with mode 0666 filtered by the umask, like any other file the user writes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import time
from pathlib import Path

TMP_PREFIX = ".attnseg-tmp-"
JOURNAL_PREFIX = ".attnseg-commit-"
#: temps and journals of a live process older than this are abandoned
STALE_SECONDS = 6 * 3600
#: temp names of the writer's earlier versions (tempfile.mkstemp): cleaned after an hour
_OLD_TMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.nii\.gz|\.nii|\.json)$")
_PID = re.compile(r"^(\d+)-")
#: test hook: the process kills itself (SIGKILL) at this stage of a commit
FAULT_ENV = "ATTNSEG_TEST_KILL_AT"


def _checkpoint(stage: str) -> None:
    if os.environ.get(FAULT_ENV) == stage:
        os.kill(os.getpid(), signal.SIGKILL)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def create_file(path: Path) -> Path:
    """Create ``path`` exclusively with mode 0666 & ~umask (never 0600 like mkstemp)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    os.close(fd)
    return path


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{path.name}")
    try:
        with open(create_file(tmp), "w") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class Unit:
    """Files written together: ``temp(final)`` hands out temporary names, ``commit()`` moves
    them all into place as one unit, ``abort()`` removes them."""

    def __init__(self) -> None:
        self.token = f"{os.getpid()}-{secrets.token_hex(6)}"
        self.moves: list[tuple[Path, Path]] = []
        self.committed = False

    def temp(self, final: str | Path) -> Path:
        final = Path(final)
        tmp = final.with_name(f"{TMP_PREFIX}{self.token}-{len(self.moves)}-{final.name}")
        create_file(tmp)
        self.moves.append((tmp, final))
        return tmp

    def abort(self) -> None:
        """Remove the temps (not after the commit point: recovery rolls those forward)."""
        if self.committed:
            return
        for tmp, _ in self.moves:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass

    def commit(self) -> None:
        if not self.moves:
            return
        folders: list[Path] = []
        for _, final in self.moves:
            if final.parent not in folders:
                folders.append(final.parent)
        for tmp, _ in self.moves:
            fsync_path(tmp)
        journals = [f / f"{JOURNAL_PREFIX}{self.token}.json" for f in folders]
        record = {"token": self.token, "pid": os.getpid(), "host": socket.gethostname(),
                  "time": time.time(), "primary": str(journals[0]),
                  "journals": [str(j) for j in journals],
                  "moves": [[str(t), str(f)] for t, f in self.moves]}
        for j in journals[1:]:
            _write_json(j, record)
        _checkpoint("before-commit")
        _write_json(journals[0], record)  # the commit point
        self.committed = True
        for f in folders:
            fsync_dir(f)
        _checkpoint("committed")
        for i, (tmp, final) in enumerate(self.moves):
            os.replace(tmp, final)
            _checkpoint(f"moved-{i}")
        for f in folders:
            fsync_dir(f)
        for j in journals[1:] + journals[:1]:
            try:
                j.unlink()
            except FileNotFoundError:
                pass
        _checkpoint("done")


def _finish(journal: Path) -> None:
    """Roll a journal's unit forward (its primary journal exists: committed) or back."""
    try:
        record = json.loads(journal.read_text())
        pid, host = int(record["pid"]), str(record["host"])
        moves = [(Path(t), Path(f)) for t, f in record["moves"]]
        primary = Path(record["primary"])
        others = [Path(j) for j in record["journals"]]
    except (OSError, ValueError, KeyError, TypeError):
        return  # written atomically, so only a foreign file looks like this: leave it
    age = time.time() - float(record.get("time", 0) or 0)
    if age < STALE_SECONDS and (host != socket.gethostname() or _pid_alive(pid)):
        return  # a live writer is committing it now
    if primary.exists():
        for tmp, final in moves:
            if tmp.exists():
                os.replace(tmp, final)
    else:
        for tmp, _ in moves:
            if tmp.exists():
                tmp.unlink()
    for j in [o for o in others if o != primary] + [primary]:
        try:
            j.unlink()
        except FileNotFoundError:
            pass


def _stale_temp(entry: os.DirEntry) -> bool:
    try:
        age = time.time() - entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return False
    if entry.name.startswith(TMP_PREFIX):
        m = _PID.match(entry.name[len(TMP_PREFIX):])
        return age > STALE_SECONDS or (m is not None and not _pid_alive(int(m.group(1))))
    return age > 3600


def recover_folder(folder: str | Path) -> None:
    """Finish the interrupted units whose journals lie in ``folder`` and remove temporary files
    their dead writers left (never raises: a folder that cannot be listed is skipped)."""
    folder = Path(folder) if str(folder) else Path(".")
    try:
        with os.scandir(folder) as it:
            entries = [e for e in it if e.name.startswith((JOURNAL_PREFIX, TMP_PREFIX))
                       or _OLD_TMP.match(e.name)]
    except OSError:
        return
    try:
        for e in entries:
            if e.name.startswith(JOURNAL_PREFIX) and e.name.endswith(".json"):
                _finish(Path(e.path))
        for e in entries:
            if not e.name.startswith(JOURNAL_PREFIX) and _stale_temp(e):
                try:
                    os.unlink(e.path)
                except FileNotFoundError:
                    pass
    except OSError:
        pass
