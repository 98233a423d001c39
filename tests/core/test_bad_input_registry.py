"""Bad input and faults against the model registry, model folders and the fine-tune (issue 12).

Every case asserts its result class (see ``_registry_cases``): a clear error of our type
(:class:`AttnsegError`, the message naming the file / model / labels and the problem), handled
with a stated caveat or warning, or the correct output. Fast: tiny models, at most a few
training steps; the SIGKILL test forks (no interpreter start-up per kill).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_attnseg._progress import drain
from napari_attnseg.errors import AttnsegError, ModelError, TrainingDataError, WriteError
from napari_attnseg.model._atomic import host_key
from napari_attnseg.model.checkpoint import load_model, read_spec, save_model
from napari_attnseg.model.registry import SHIPPED_ROOT, ModelRegistry
from napari_attnseg.training import TrainConfig, TrainingPair, finetune_job

from _registry_cases import (ACTIVE_CASES, BAD_NAMES, CONFIG_CASES, CORRECT, ERROR, RAW_CONFIG_CASES, REF_CASES,
                              WARNING, phantom, tamper, tiny_net, tiny_spec)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _error(exc_info, *must) -> str:
    """The message of a clear error: our type, naming every string in ``must``."""
    assert isinstance(exc_info.value, AttnsegError), type(exc_info.value)
    msg = str(exc_info.value)
    for m in must:
        assert re.search(m, msg), f"{m!r} not in {msg!r}"
    return msg


@pytest.fixture
def folder(tmp_path):
    return save_model(tmp_path / "m", tiny_net(), tiny_spec())


@pytest.fixture
def reg(tmp_path):
    """A registry with tiny@1 (active) and nothing shipped."""
    r = ModelRegistry(tmp_path / "reg", shipped_root=tmp_path / "none")
    r.add_version("tiny", tiny_net(), tiny_spec(), activate=True)
    return r


def _state(reg: ModelRegistry, name: str = "tiny"):
    """What the registry holds for ``name``: versions and what the name refers to."""
    return [e.version for e in reg.versions(name)], reg.get(name).version


# =========================================================================== config.json
@pytest.mark.parametrize("case_id,change,match", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_invalid_config_is_a_clear_error(folder, case_id, change, match):
    tamper(folder, change)
    for loader in (load_model, read_spec):
        with pytest.raises(AttnsegError) as ei:
            loader(folder)
        _error(ei, re.escape(str(folder / "config.json")), match)


@pytest.mark.parametrize("case_id,raw,match", RAW_CONFIG_CASES, ids=[c[0] for c in RAW_CONFIG_CASES])
def test_unparseable_config_is_a_clear_error(folder, case_id, raw, match, caplog):
    if raw is None:  # valid JSON, but absurdly nested
        config = json.loads((folder / "config.json").read_text())
        deep: dict = {}
        for _ in range(500):
            deep = {"x": deep}
        config["provenance"] = deep
        config.pop("config_sha256")
        raw = json.dumps(config).encode()
    (folder / "config.json").write_bytes(raw)
    with pytest.raises(AttnsegError) as ei:
        load_model(folder)
    _error(ei, re.escape(str(folder / "config.json")), match)
    # a registry holding such a folder still lists (a warning), and loading it is the clear error
    root = folder.parent / "reg"
    shutil.copytree(folder, root / "bad" / "1")
    with caplog.at_level(logging.WARNING):
        assert [e.ref for e in ModelRegistry(root, shipped_root=root / "none").list_models()] == ["bad@1"]  # WARNING
    assert "unreadable config.json" in caplog.text


def test_config_too_large_is_refused_before_reading(folder):
    with open(folder / "config.json", "ab") as fh:
        fh.truncate(20 << 20)
    with pytest.raises(AttnsegError) as ei:
        load_model(folder)
    _error(ei, "config.json", "too large for a model config")


def test_edited_config_is_caught_by_its_hash(folder):
    tamper(folder, lambda c: c["normalization"].update(clip=[-1000, 1000]), keep_hash=True)  # a valid value
    with pytest.raises(ModelError) as ei:
        load_model(folder)
    _error(ei, "config.json was changed after the model was saved", "delete the 'config_sha256' entry")
    tamper(folder, lambda c: c.update(config_sha256="0" * 63 + "z"), keep_hash=True)
    with pytest.raises(ModelError, match="config_sha256' must be 64"):
        load_model(folder)


def test_config_hash_is_written_and_legacy_configs_still_load(folder):
    config = json.loads((folder / "config.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{64}", config["config_sha256"])  # CORRECT: written by save
    tamper(folder, lambda c: None)  # the hash removed: a folder saved before it existed
    assert load_model(folder).spec.name == "tiny"  # CORRECT: checked when present only


@pytest.mark.parametrize("name", ["ct-phantom-2d", "hc18-ultrasound-2d"])
def test_shipped_models_carry_a_valid_config_hash(name):
    folder = SHIPPED_ROOT / name / "1"
    if not folder.is_dir():
        pytest.skip("model not shipped in this checkout")
    from napari_attnseg.model.config_check import config_hash

    config = json.loads((folder / "config.json").read_text())
    assert config["config_sha256"] == config_hash(config)
    assert load_model(folder).spec.name == name  # CORRECT


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_non_finite_weights_are_refused_at_load_and_save(folder, bad):
    net = tiny_net()
    with torch.no_grad():
        next(net.parameters()).view(-1)[3] = bad
    with pytest.raises(ModelError) as ei:
        save_model(folder.parent / "nan", net, tiny_spec())
    _error(ei, "refusing to save", "NaN or infinite")
    assert not (folder.parent / "nan").exists()
    # written behind our back (and the hashes recomputed): refused at load
    state = net.state_dict()
    torch.save(state, folder / "weights.pt")
    tamper(folder, lambda c: c.pop("weights_sha256"))
    with pytest.raises(ModelError) as ei:
        load_model(folder)
    _error(ei, re.escape(str(folder / "weights.pt")), "NaN or infinite values", "encoder")


# =========================================================================== active.json
@pytest.mark.parametrize("case_id,content,match", ACTIVE_CASES, ids=[c[0] for c in ACTIVE_CASES])
def test_broken_active_json_is_an_error_with_the_fix(reg, case_id, content, match):
    reg.add_version("tiny", tiny_net(1), tiny_spec())  # tiny@2, not active
    path = reg.root / "tiny" / "active.json"
    path.unlink()
    if content == "delete":
        pass
    elif content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    for lookup in (lambda: reg.get("tiny"), lambda: reg.resolve("tiny")):
        with pytest.raises(ModelError) as ei:
            lookup()
        msg = _error(ei, re.escape(str(path)), match)
        assert "tiny@N" in msg  # says how to fix it: choose explicitly (or write the file)
    assert reg.get("tiny", 1).version == "1"  # an explicit version still works: CORRECT


def test_the_no_model_default_follows_the_same_active_rule(tmp_path):
    shipped = tmp_path / "shipped"
    save_model(shipped / "ct-phantom-2d" / "1", tiny_net(), tiny_spec("ct-phantom-2d"))
    reg = ModelRegistry(tmp_path / "user", shipped_root=shipped)
    assert reg.default_model().path == shipped / "ct-phantom-2d" / "1"  # CORRECT
    tuned = reg.add_version("ct-phantom-2d", tiny_net(1), tiny_spec(), activate=True)
    assert reg.default_model().path == tuned.path  # CORRECT: the activated fine-tune
    active = reg.root / "ct-phantom-2d" / "active.json"
    active.write_text("{corrupt")
    with pytest.raises(ModelError) as ei:  # ERROR, not the shipped v1
        reg.default_model()
    _error(ei, re.escape(str(active)), "corrupt")
    active.unlink()
    with pytest.raises(ModelError) as ei:  # deleted: ERROR, not a silent fall-back
        reg.default_model()
    _error(ei, "no active version", re.escape(str(active)))
    from napari_attnseg.model.choose import choose_model

    with pytest.raises(ModelError) as ei:  # the chooser behind `attnseg predict` without --model too
        choose_model("CT", registry=reg)
    _error(ei, "no active version", re.escape(str(active)))
    reg.set_active("ct-phantom-2d", 1)
    assert choose_model("CT", "phantom", registry=reg).info.path == shipped / "ct-phantom-2d" / "1"  # CORRECT


def test_adding_an_inactive_version_never_changes_what_the_name_means(reg):
    before = _state(reg)
    reg.add_version("tiny", tiny_net(1), tiny_spec())
    assert _state(reg) == (["1", "2"], before[1])  # CORRECT
    (reg.root / "tiny" / "active.json").unlink()
    reg2 = ModelRegistry(reg.root, shipped_root=reg.shipped_root)
    shutil.rmtree(reg.root / "tiny" / "2")
    assert _state(reg2) == (["1"], "1")  # one version left: unambiguous, CORRECT


# =========================================================================== names / versions
@pytest.mark.parametrize("case_id,ref,match", REF_CASES, ids=[c[0] for c in REF_CASES])
def test_references_cannot_leave_the_registry(reg, tmp_path, case_id, ref, match):
    (tmp_path / "evil").mkdir()  # what a ../evil reference would reach
    save_model(tmp_path / "evil" / "m", tiny_net(), tiny_spec())
    with pytest.raises(ModelError) as ei:
        reg.resolve(ref)
    _error(ei, match)


@pytest.mark.parametrize("case_id,name", BAD_NAMES, ids=[c[0] for c in BAD_NAMES])
def test_bad_names_are_refused_everywhere(reg, case_id, name):
    for call in (lambda: reg.add_version(name, tiny_net(), tiny_spec()), lambda: reg.get(name),
                 lambda: reg.versions(name), lambda: reg.set_active(name, 1), lambda: reg.check_writable(name)):
        with pytest.raises(ModelError) as ei:
            call()
        _error(ei, "invalid model name", "cannot be a path")
    assert sorted(p.name for p in reg.root.iterdir()) == ["tiny"]


def test_bad_versions_are_refused(reg):
    for version in ("../1", "/1", "", True):
        with pytest.raises(ModelError) as ei:
            reg.set_active("tiny", version)
        _error(ei, "invalid model version")
    assert reg.resolve(str(reg.root / "tiny" / "1")) == reg.root / "tiny" / "1"  # a folder path: CORRECT


# =========================================================================== leftovers, umask
def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_leftovers_of_dead_writers_are_cleaned_at_start_up(reg):
    base, dead, live = reg.root / "tiny", _dead_pid(), os.getppid()
    stale = [base / f".2.tmp-{dead}-{host_key()}-0123abcd", base / f".2.stage-{dead}-{host_key()}-0123abce",
             base / f"..2.stage-{dead}-{host_key()}-0123abcf.tmp-{dead}-{host_key()}-0123abd0"]
    for p in stale:
        p.mkdir()
        (p / "weights.pt").write_bytes(b"half")
    stale_file = base / f".active.json.tmp-{dead}-{host_key()}-0123abd1"
    stale_file.write_text('{"vers')
    old_legacy = base / ".3.tmp-deadbeef"
    old_legacy.mkdir()
    os.utime(old_legacy, (time.time() - 7200, time.time() - 7200))
    keep = [base / f".4.tmp-{live}-{host_key()}-0123abd2",  # a live writer
            base / f".4.tmp-{dead}-ffffff-0123abd3",  # another host: cannot tell
            base / ".5.tmp-cafebabe"]  # legacy, fresh
    for p in keep:
        p.mkdir()
    unrelated = base / ".notes"
    unrelated.write_text("mine")
    ModelRegistry(reg.root, shipped_root=reg.shipped_root)
    assert not any(p.exists() for p in stale + [stale_file, old_legacy])  # CORRECT: removed
    assert all(p.exists() for p in keep + [unrelated])  # CORRECT: left alone
    assert _state(reg) == (["1"], "1")


def test_interrupted_overwrite_is_rolled_back(tmp_path):
    folder = save_model(tmp_path / "reg" / "tiny" / "1", tiny_net(), tiny_spec())
    aside = folder.parent / f".1.old-{_dead_pid()}-{host_key()}-0123abcd"
    os.replace(folder, aside)  # killed between moving the old version aside and the rename
    reg = ModelRegistry(tmp_path / "reg", shipped_root=tmp_path / "none")
    assert _state(reg) == (["1"], "1") and not aside.exists()  # CORRECT: restored


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_outputs_keep_the_users_umask(tmp_path, umask):
    from napari_attnseg.commands.finetune import _copy_model

    old = os.umask(umask)
    try:
        reg = ModelRegistry(tmp_path / "reg", shipped_root=tmp_path / "none")
        entry = reg.add_version("tiny", tiny_net(), tiny_spec(), activate=True)
        _copy_model(entry.path, tmp_path / "out")
    finally:
        os.umask(old)
    for p in (entry.path / "weights.pt", entry.path / "config.json", reg.root / "tiny" / "active.json",
              tmp_path / "out" / "config.json"):
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p
    for p in (entry.path, tmp_path / "out"):
        assert p.stat().st_mode & 0o777 == 0o777 & ~umask, p


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"),
                                 RuntimeError("PytorchStreamWriter failed writing file data/0")],
                         ids=["ENOSPC", "torch-writer"])
def test_full_disk_during_save_is_a_clear_error_and_leaves_nothing(reg, monkeypatch, exc):
    import napari_attnseg.model.checkpoint as ck

    def full(*a, **k):
        raise exc

    monkeypatch.setattr(ck.torch, "save", full)
    with pytest.raises(WriteError) as ei:
        reg.add_version("tiny", tiny_net(1), tiny_spec(), activate=True)
    _error(ei, "could not save the model", "No space|PytorchStreamWriter")
    assert _state(reg) == (["1"], "1")
    assert sorted(p.name for p in (reg.root / "tiny").iterdir()) == ["1", "active.json"]


# =========================================================================== SIGKILL during a save
def _child(root: Path, shipped: Path, net, spec, activate: bool, kill_at: int, report: int) -> None:
    """In a forked child: add tiny@2 to the registry at ``root``, SIGKILLing itself just before
    I/O step ``kill_at`` (0: never); writes the number of steps to the pipe ``report``."""
    import builtins
    import io

    steps = [0]

    def step():
        steps[0] += 1
        if steps[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def wrap(fn, writes_only=False):
        def wrapped(*a, **k):
            mode = a[1] if len(a) > 1 else k.get("mode", "r")
            counted = not writes_only or any(c in str(mode) for c in "wax+")
            if counted:
                step()
            out = fn(*a, **k)
            if counted:
                step()
            return out
        return wrapped

    try:
        for mod, name in ((os, "replace"), (os, "rename"), (os, "fsync"), (os, "mkdir"), (os, "unlink"),
                          (os, "rmdir"), (torch, "save"), (json, "dump")):
            setattr(mod, name, wrap(getattr(mod, name)))
        builtins.open = io.open = wrap(io.open, writes_only=True)
        reg = ModelRegistry(root, shipped_root=shipped)
        reg.add_version("tiny", net, spec, parent="tiny@1", activate=activate)
        os.write(report, str(steps[0]).encode())
        os._exit(0)
    except BaseException:  # noqa: BLE001 - a forked child must never return into pytest
        os._exit(3)


def _run_child(template: Path, root: Path, net, spec, activate: bool, kill_at: int = 0,
               kill_after_s: float | None = None) -> tuple[int, int]:
    """Fresh copy of ``template`` at ``root``, a child saving into it; returns (signal or 0, steps)."""
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(template, root)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _child(root, root.parent / "none", net, spec, activate, kill_at, w)
    os.close(w)
    if kill_after_s is not None:
        time.sleep(kill_after_s)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the saving child hung")
        time.sleep(0.002)
    steps = os.read(r, 64).decode()
    os.close(r)
    if os.WIFSIGNALED(status):
        return os.WTERMSIG(status), 0
    assert os.WEXITSTATUS(status) == 0, f"the child failed (exit {os.WEXITSTATUS(status)})"
    return 0, int(steps)


def _consistent_state(root: Path, old, new) -> str:
    """Open the registry (recovery runs) and check it holds exactly the old or the new state."""
    reg = ModelRegistry(root, shipped_root=root.parent / "none")
    state = _state(reg)
    assert state in (old, new), f"neither old {old} nor new {new}: {state}"
    for e in reg.versions("tiny"):
        load_model(e.path)  # complete and uncorrupted (hashes checked)
    leftovers = [p.name for p in (root / "tiny").iterdir() if p.name.startswith(".")]
    assert not leftovers, leftovers
    assert not list(root.glob("tiny/*/.activate"))
    return "old" if state == old else "new"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("activate", [True, False], ids=["activated", "not-activated"])
def test_sigkill_at_any_moment_of_a_save_leaves_the_old_or_the_new_state(tmp_path, activate):
    template = tmp_path / "template"
    ModelRegistry(template, shipped_root=tmp_path / "none").add_version("tiny", tiny_net(), tiny_spec())
    old, new = (["1"], "1"), (["1", "2"], "2" if activate else "1")
    net, spec = tiny_net(1), tiny_spec()
    root = tmp_path / "reg"
    t0 = time.perf_counter()
    sig, n_steps = _run_child(template, root, net, spec, activate)
    duration = time.perf_counter() - t0
    assert sig == 0 and n_steps > 10 and _consistent_state(root, old, new) == "new"
    seen = {"old": 0, "new": 0}
    for k in range(1, n_steps + 1):  # a kill before every I/O step of the save and of its return
        sig, _ = _run_child(template, root, net, spec, activate, kill_at=k)
        assert sig == signal.SIGKILL, k
        seen[_consistent_state(root, old, new)] += 1
    assert seen["old"] and seen["new"], seen  # the kills fell on both sides of the commit
    rng = random.Random(0)
    for _ in range(12):  # and at random moments
        _run_child(template, root, net, spec, activate, kill_after_s=rng.uniform(0, 1.2 * duration))
        _consistent_state(root, old, new)
