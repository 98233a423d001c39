"""Write safety (issue 12): a mask, its probabilities and their sidecars are one unit. A SIGKILL
at any moment leaves the old complete unit or the new complete one; failures leave no temps;
stale temps and interrupted units are cleaned up at the next start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _bad_inputs import scan_file, sha, tiny_model  # noqa: E402

from napari_attnseg.errors import WriteError  # noqa: E402
from napari_attnseg.io.atomic import JOURNAL_PREFIX, TMP_PREFIX, recover_folder  # noqa: E402
from napari_attnseg.io.writers import sidecar_path, write_volumes  # noqa: E402
from napari_attnseg.volume import Volume  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _pair(value: int):
    lab = Volume(np.full((6, 5, 4), value, np.uint8), (2.0, 1.0, 1.0), is_labels=True)
    return [(lab, "seg.nii.gz", None, {"run": value}),
            (lab.with_data(np.full((6, 5, 4), value / 10, np.float32), is_labels=False),
             "prob.nii.gz", None, {"run": value})]


def unit_state(*paths: Path) -> str:
    """The unit token the files and sidecars agree on; AssertionError if they do not."""
    tokens = set()
    for p in paths:
        side = json.loads(sidecar_path(p).read_text())
        together = side["written_together"]
        listed = {e["path"]: e["sha256"] for e in together["files"]}
        assert listed[os.path.abspath(p)] == sha(p), f"{p} does not match its sidecar"
        assert set(listed) == {os.path.abspath(q) for q in paths}
        tokens.add(together["unit"])
    assert len(tokens) == 1, f"files from different units: {tokens}"
    return tokens.pop()


def leftovers(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith((TMP_PREFIX, JOURNAL_PREFIX)))


def _write_pair(folder: Path, value: int, kill_at: str | None = None) -> int:
    """Write the pair in a forked child (no interpreter start-up); with ``kill_at`` the child
    SIGKILLs itself at that stage of the commit. Returns the child's wait status."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            if kill_at:
                os.environ["ATTNSEG_TEST_KILL_AT"] = kill_at
            write_volumes([(v, folder / name, r, p) for v, name, r, p in _pair(value)])
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


@pytest.mark.parametrize("stage,expect_new", [
    ("before-commit", False), ("committed", True), ("moved-0", True), ("moved-1", True),
    ("moved-2", True), ("done", True)])
def test_kill_at_every_commit_stage(tmp_path, stage, expect_new):
    assert _write_pair(tmp_path, 1) == 0
    seg, prob = tmp_path / "seg.nii.gz", tmp_path / "prob.nii.gz"
    old = unit_state(seg, prob)
    rc = _write_pair(tmp_path, 2, kill_at=stage)
    assert rc == -signal.SIGKILL
    recover_folder(tmp_path)  # what the next write or NIfTI read does first
    new = unit_state(seg, prob)
    assert (new != old) == expect_new
    assert leftovers(tmp_path) == []
    from napari_attnseg.io import read_volume

    assert int(read_volume(seg).data.max()) == (2 if expect_new else 1)


def test_a_read_finishes_an_interrupted_unit(tmp_path):
    """A kill after the commit point: the next read of either file completes the unit."""
    from napari_attnseg.io import read_volume

    assert _write_pair(tmp_path, 1) == 0
    assert _write_pair(tmp_path, 2, kill_at="moved-0") == -signal.SIGKILL
    assert leftovers(tmp_path)  # the journal and the unmoved temps
    assert float(read_volume(tmp_path / "prob.nii.gz").data.max()) == pytest.approx(0.2)
    unit_state(tmp_path / "seg.nii.gz", tmp_path / "prob.nii.gz")
    assert leftovers(tmp_path) == []


def test_failed_unit_leaves_the_old_files_and_no_temps(tmp_path, monkeypatch):
    from napari_attnseg.io import writers

    seg, prob = tmp_path / "seg.nii.gz", tmp_path / "prob.nii.gz"
    lab = Volume(np.ones((6, 5, 4), np.uint8), (2.0, 1.0, 1.0), is_labels=True)
    write_volumes([(lab, seg, None, None), (lab.with_data(np.ones((6, 5, 4), np.float32),
                                                          is_labels=False), prob, None, None)])
    before = unit_state(seg, prob)
    calls = []

    def failing_verify(tmp, path, *a):
        calls.append(path)
        if len(calls) == 2:
            raise WriteError(path, "verification failed: injected")

    monkeypatch.setattr(writers, "_verify", failing_verify)
    with pytest.raises(WriteError, match="injected"):
        write_volumes([(lab.with_data(np.zeros((6, 5, 4), np.uint8)), seg, None, None),
                       (lab.with_data(np.zeros((6, 5, 4), np.float32), is_labels=False), prob,
                        None, None)])
    assert unit_state(seg, prob) == before and leftovers(tmp_path) == []


def test_stale_temps_and_dead_units_are_cleaned(tmp_path):
    dead = 2**22 + 12345  # above the default pid_max: no such process
    stale = tmp_path / f"{TMP_PREFIX}{dead}-abcd-0-seg.nii.gz"
    stale.write_bytes(b"half")
    old_style = tmp_path / ".seg.ab12cd34.tmp.nii.gz"
    old_style.write_bytes(b"half")
    os.utime(old_style, (time.time() - 7200, time.time() - 7200))
    live = tmp_path / f"{TMP_PREFIX}{os.getpid()}-ffff-0-other.nii.gz"
    live.write_bytes(b"being written")
    target = tmp_path / "out.json"
    moved = tmp_path / f"{TMP_PREFIX}{dead}-beef-0-out.json"
    moved.write_text("new")
    journal = tmp_path / f"{JOURNAL_PREFIX}{dead}-beef.json"
    journal.write_text(json.dumps({"pid": dead, "host": os.uname().nodename, "time": 0,
                                   "primary": str(journal), "journals": [str(journal)],
                                   "moves": [[str(moved), str(target)]]}))
    recover_folder(tmp_path)
    assert not stale.exists() and not old_style.exists() and live.exists()
    assert target.read_text() == "new" and not journal.exists()


def _predict_cmd(tmp: Path) -> list[str]:
    return ["predict", str(tmp / "scan.nii.gz"), "-o", str(tmp / "seg.nii.gz"),
            "--probabilities", str(tmp / "prob.nii.gz"), "--model", str(tmp / "badtiny"),
            "--device", "cpu", "--threads", "1", "-q"]


def _kill_predict(tmp: Path, delay_s: float, when: str) -> str:
    """Run ``attnseg predict`` in a subprocess and SIGKILL it ``delay_s`` after it starts
    (``when="start"``) or after its first temporary output appears (``"write"``); then check
    that the outputs are the old or the new complete pair."""
    from napari_attnseg.cli import main

    seg, prob = tmp / "seg.nii.gz", tmp / "prob.nii.gz"
    if not seg.exists():
        scan_file(tmp)
        tiny_model(tmp)
        assert main(_predict_cmd(tmp)) == 0  # the old pair, written in-process
    old = unit_state(seg, prob)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "napari_attnseg.cli", *_predict_cmd(tmp)],
                            env=env, stderr=subprocess.DEVNULL)
    if when == "write":
        while proc.poll() is None and not any(n.startswith(TMP_PREFIX) for n in os.listdir(tmp)):
            time.sleep(0.0005)
    time.sleep(delay_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=300)
    recover_folder(tmp)
    state = unit_state(seg, prob)  # never a mix of two runs
    assert leftovers(tmp) == []
    return "old" if state == old else "new"


def test_sigkill_while_predict_writes_leaves_a_consistent_pair(tmp_path):
    """One real kill of a real predict as its outputs are being written (the commit stages
    themselves are covered one by one above; many moments: the slow variant)."""
    assert _kill_predict(tmp_path, 0.0, "write") in ("old", "new")


@pytest.mark.slow
def test_sigkill_during_predict_at_many_moments(tmp_path):
    """Kills spread over a whole run (fractions of a measured uninterrupted run) and just
    after the writing starts: every one leaves a complete pair, old or new."""
    _kill_predict(tmp_path, 0.0, "write")  # the old pair and a first kill
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "napari_attnseg.cli", *_predict_cmd(tmp_path)],
                   env=env, check=True, timeout=300, stderr=subprocess.DEVNULL)
    full = time.monotonic() - t0
    outcomes = [_kill_predict(tmp_path, d, "write") for d in (0.001, 0.003, 0.01, 0.03, 0.1)]
    outcomes += [_kill_predict(tmp_path, full * f, "start")
                 for f in (0.5, 0.8, 0.9, 0.95, 1.0, 1.05, 1.5)]
    assert "old" in outcomes and "new" in outcomes  # kills landed on both sides of the commit
