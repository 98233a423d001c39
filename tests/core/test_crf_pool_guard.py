"""The CRF's slice pool never runs the user's ``__main__`` again (issue 11, point 6).

A script without an ``if __name__ == "__main__":`` guard prints a line at its top, starts a
thread (napari and Qt always run some, so the pool cannot fork and uses "forkserver") and refines
a small volume in 2D with two worker processes at module level. Before the fix every worker ran
the whole script again (the line was printed three times, and the pool broke); now it is printed
once and the result equals the serial run computed here."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("pydensecrf.densecrf")

TIMEOUT_S = 180
SCENE = textwrap.dedent("""
    import numpy as np
    rng = np.random.default_rng(0)
    gt = np.zeros((6, 32, 32), np.uint8)
    gt[:, 8:24, 8:24] = 1
    fg = np.clip(0.5 + 0.3 * (2 * gt - 1) + rng.normal(0, 0.3, gt.shape), 0.01, 0.99)
    fg = fg.astype(np.float32)
    img = (gt * 100 + rng.normal(0, 30, gt.shape)).astype(np.float32)
""")
SCRIPT = textwrap.dedent("""
    import os, sys, threading, time
    print("TOP-OF-SCRIPT", os.getpid(), __name__, flush=True)
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
    from napari_attnseg.crf import CRFParams, dense_crf, refine
    {scene}
    res = refine(fg, img, (3.0, 1.0, 1.0), CRFParams(mode="2d", workers=2))
    pids = sorted(dense_crf._POOL._processes)
    print("POOL", dense_crf._POOL_KEY[1], len(pids), os.getpid() not in pids, flush=True)
    print("RESULT", res.labels.astype(np.uint8).tobytes().hex(), flush=True)
    dense_crf.shutdown_pool()
""")
#: The control: the same unguarded script with a plain forkserver pool re-runs itself in the
#: worker (which then fails to start a pool of its own), so the count below does detect it.
CONTROL = textwrap.dedent("""
    import os, sys, threading, time
    print("TOP-OF-SCRIPT", os.getpid(), __name__, flush=True)
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(1, mp_context=mp.get_context("forkserver")) as ex:
        try:
            print("RESULT", ex.submit(os.getpid).result(timeout=60), flush=True)
        except Exception as exc:
            print("BROKEN", type(exc).__name__, flush=True)
""")


def _run(tmp_path, body: str, as_module: bool) -> list[str]:
    (tmp_path / "unguarded_crf_script.py").write_text(body)
    target = ["-m", "unguarded_crf_script"] if as_module else ["unguarded_crf_script.py"]
    proc = subprocess.run([sys.executable, *target], cwd=tmp_path, capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return lines


def _expected() -> str:
    from napari_attnseg.crf import CRFParams, refine

    ns: dict = {}
    exec(SCENE, ns)  # the script's scene, refined serially in this process
    res = refine(ns["fg"], ns["img"], (3.0, 1.0, 1.0), CRFParams(mode="2d", workers=1))
    return res.labels.astype(np.uint8).tobytes().hex()


def _check(lines: list[str]) -> None:
    tops = [ln for ln in lines if ln.startswith("TOP-OF-SCRIPT")]
    assert len(tops) == 1, lines
    pool = [ln.split() for ln in lines if ln.startswith("POOL")]
    assert pool == [["POOL", "forkserver", "2", "True"]], lines  # really two worker processes
    result = [ln.split()[1] for ln in lines if ln.startswith("RESULT")]
    assert result == [_expected()]


def test_unguarded_script_is_not_run_again_by_the_crf_workers(tmp_path):
    _check(_run(tmp_path, SCRIPT.format(scene=SCENE), as_module=False))


@pytest.mark.slow
def test_unguarded_module_run_with_dash_m_is_not_run_again(tmp_path):
    _check(_run(tmp_path, SCRIPT.format(scene=SCENE), as_module=True))


def test_control_a_plain_forkserver_pool_does_run_the_script_again(tmp_path):
    lines = _run(tmp_path, CONTROL, as_module=False)
    assert sum(ln.startswith("TOP-OF-SCRIPT") for ln in lines) == 2, lines
    assert any(ln.startswith("BROKEN") for ln in lines), lines


def test_other_processes_still_get_main():
    """Only the CRF's own processes leave ``__main__`` out: a user's pool is unchanged."""
    from multiprocessing import spawn

    from napari_attnseg.crf._pool_context import MAIN_KEYS, _install, _local

    _install()
    original = spawn.get_preparation_data.__wrapped__
    plain = original("x")
    assert set(MAIN_KEYS) & set(plain)  # pytest's own __main__ is named or has a path
    assert spawn.get_preparation_data("x") == plain
    _local.no_main = True
    try:
        filtered = spawn.get_preparation_data("x")
    finally:
        _local.no_main = False
    assert not set(MAIN_KEYS) & set(filtered)
    assert {k: v for k, v in plain.items() if k not in MAIN_KEYS} == filtered
