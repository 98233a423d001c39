"""Training core: dataset split, augmentation, losses with ignore mask, loop, fine-tune, readers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_attnseg._progress import drain
from napari_attnseg.errors import TrainingDataError
from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
from napari_attnseg.model.checkpoint import ModelSpec, load_model
from napari_attnseg.model.registry import ModelRegistry
from napari_attnseg.training import (
    TrainConfig,
    TrainingError,
    TrainingPair,
    data_hash,
    finetune_job,
    reviewed_slices,
    split_reviewed_slices,
    train,
    train_job,
)
from napari_attnseg.training.augment import AugmentParams, random_crop
from napari_attnseg.training.dataset import BatchSampler, prepare_pairs, read_dataset, read_hc18
from napari_attnseg.training.losses import DiceCELoss, deep_supervision_weights, dice_ce_loss, downsample_target
from napari_attnseg.volume import Volume

ARCH = UNetConfig(channels=(4, 8, 16))
PATCH = (16, 16)


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _spec(**kw) -> ModelSpec:
    return ModelSpec(arch=kw.pop("arch", ARCH), label_names={0: "background", 1: "disc"}, modality="MR",
                     patch_size=PATCH, name=kw.pop("name", "tiny"), **kw)


def _volume(z=6, y=20, x=24, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:y, :x]
    img = np.zeros((z, y, x), np.float32)
    lab = np.zeros((z, y, x), np.uint8)
    for k in range(z):
        disc = (yy - 10) ** 2 + (xx - 12 + (k % 3)) ** 2 < (4 + k % 3) ** 2
        lab[k] = disc
        img[k] = disc * 100.0 + rng.normal(0, 15, (y, x))
    return Volume(img, (2.0, 1.0, 1.0), modality="MR"), Volume(lab, (2.0, 1.0, 1.0), is_labels=True)


def _pair(reviewed=None, seed=0) -> TrainingPair:
    img, lab = _volume(seed=seed)
    return TrainingPair(img, lab, reviewed)


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=2, steps_per_epoch=4, batch_size=4, patch_size=PATCH, lr=3e-3, augment=False,
                early_stopping_patience=0, num_threads=1)
    base.update(kw)
    return TrainConfig(**base)


def _net(seed=0) -> AttentionUNet:
    torch.manual_seed(seed)
    return AttentionUNet(ARCH)


# --------------------------------------------------------------------------- dataset
def test_split_reviewed_slices_holds_out_and_explains_shortage():
    flags = np.array([1, 0, 1, 1, 0, 1], bool)
    pair = _pair(flags)
    assert reviewed_slices(pair) == [0, 2, 3, 5]
    tr, va = split_reviewed_slices([pair], val_fraction=0.5, min_val=1, seed=3)
    t, v = reviewed_slices(tr[0]), reviewed_slices(va[0])
    assert len(v) == 2 and len(t) == 2 and not set(t) & set(v) and set(t) | set(v) == {0, 2, 3, 5}
    with pytest.raises(ValueError, match=r"need at least 3 reviewed slices .* have 1"):
        split_reviewed_slices([_pair(np.eye(6, dtype=bool)[0])], min_val=2)
    # a voxel mask counts slices that hold any reviewed voxel
    mask = np.zeros((6, 20, 24), bool)
    mask[1, :5, :5] = True
    mask[4, 3, 3] = True
    assert reviewed_slices(_pair(mask)) == [1, 4]


def test_data_hash_changes_with_labels_and_review():
    a = _pair()
    b = _pair(np.array([1, 1, 1, 1, 1, 0], bool))
    lab = a.labels.data.copy()
    lab[0, 0, 0] = 1
    c = TrainingPair(a.image, a.labels.with_data(lab))
    assert len({data_hash(a), data_hash(b), data_hash(c)}) == 3
    assert data_hash(a) == data_hash(_pair())


def test_mismatched_grid_is_refused():
    img, lab = _volume()
    with pytest.raises(ValueError, match="same|share a grid"):
        TrainingPair(img, Volume(lab.data[:, :10], (2, 1, 1)))


# --------------------------------------------------------------------------- augmentation
def test_augmentation_is_joint_seeded_and_masks_padding():
    rng0 = np.random.default_rng(0)
    lab = (rng0.random((30, 30)) > 0.5).astype(np.int64)
    img = lab.astype(np.float32) * 10
    mask = np.ones_like(lab, bool)
    spatial_only = AugmentParams(p_rotate=1.0, p_scale=1.0, p_elastic=1.0, p_int_scale=0, p_int_shift=0,
                                 p_gamma=0, p_noise=0)
    a = random_crop(img, lab, mask, (24, 24), np.random.default_rng(5), params=spatial_only)
    b = random_crop(img, lab, mask, (24, 24), np.random.default_rng(5), params=spatial_only)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    # labels follow the image: where the image is exactly 0 or 10 (nearest-like), labels agree
    im, lb, mk = a
    exact = (im == 0) | (im == 10)
    assert np.array_equal(lb[exact & mk], (im[exact & mk] == 10).astype(np.int64))
    # flips / rot90 only: exact correspondence everywhere
    flips = AugmentParams(p_rotate=0, p_scale=0, p_elastic=0, p_flip=1.0, p_rot90=1.0, p_int_scale=0,
                          p_int_shift=0, p_gamma=0, p_noise=0)
    im, lb, mk = random_crop(img, lab, mask, (24, 24), np.random.default_rng(1), params=flips)
    assert np.array_equal(lb, (im == 10).astype(np.int64)) and mk.all()
    # a small input is padded and the padding never trains
    im, lb, mk = random_crop(img[:10, :12], lab[:10, :12], mask[:10, :12], (16, 16), np.random.default_rng(2),
                             augment=False)
    assert im.shape == (16, 16) and mk.sum() == 120 and not lb[~mk].any()


def test_inputs_are_not_modified_by_sampling():
    pair = _pair(np.array([1, 1, 0, 1, 1, 1], bool))
    for arr in (pair.image.data, pair.labels.data, pair.reviewed):
        arr.setflags(write=False)
    items = prepare_pairs([pair], _spec(), 2)
    sampler = BatchSampler(items, PATCH, augment=True)
    img, lab, msk = sampler.build(sampler.sample_seeds(np.random.default_rng(0), 8))
    assert img.shape == (8, 1, 16, 16) and lab.dtype == np.int64 and msk.dtype == bool
    assert len(items) == 5  # one per reviewed slice


def test_class_balanced_sampling_centres_a_rare_class_as_often_as_a_common_one():
    from napari_attnseg.training.dataset import PreparedItem

    items = []
    for i in range(60):  # class 1 in every slice, class 2 (4 px) in one: a coronal esophagus
        lab = np.zeros((32, 32), np.int64)
        lab[4:14, 4:14] = 1
        if i == 7:
            lab[24:26, 24:26] = 2
        mask = np.ones((32, 32), bool)
        mask[0] = False  # centres come from trainable voxels only
        it = PreparedItem(np.zeros((32, 32), np.float32), lab, mask)
        it.fg_coords = np.argwhere((lab > 0) & mask)
        items.append(it)

    def rare_share(mode):
        sampler = BatchSampler(items, PATCH, augment=False, fg_sampling=mode)
        rng = np.random.default_rng(0)
        _, lab, _ = sampler.build(sampler.sample_seeds(rng, 1200))
        return float((lab == 2).any(axis=(1, 2)).mean())

    voxel, balanced = rare_share("voxel"), rare_share("class")
    # voxel: ~1/60 of the slices hold it; class: half of the foreground third centre on it
    assert voxel < 0.04 and 0.12 < balanced < 0.22
    with pytest.raises(ValueError, match="fg_sampling"):
        BatchSampler(items, PATCH, fg_sampling="organ")
    with pytest.raises(ValueError, match="fg_sampling"):
        TrainConfig(fg_sampling="organ")
    assert TrainConfig(fg_sampling="Class").fg_sampling == "class"


# --------------------------------------------------------------------------- losses
def test_unreviewed_voxels_have_no_effect_on_the_gradient():
    torch.manual_seed(0)
    net = AttentionUNet(ARCH).train()
    x = torch.randn(2, 1, 16, 16)
    target = torch.randint(0, 2, (2, 16, 16))
    mask = torch.zeros(2, 16, 16, dtype=torch.bool)
    mask[:, 4:12, 2:10] = True
    loss_fn = DiceCELoss()

    def grads(t):
        net.zero_grad()
        loss_fn(net(x), t, mask).backward()
        return [p.grad.clone() for p in net.parameters()]

    g0 = grads(target)
    changed = target.clone()
    changed[~mask] = 1 - changed[~mask]
    changed[0, 0, 0] = 7  # even an out-of-range label in the unreviewed region is ignored
    g1 = grads(changed)
    assert all(torch.equal(a, b) for a, b in zip(g0, g1))
    # ... while a change inside the reviewed region does change it (the test can fail)
    inside = target.clone()
    inside[mask] = 1 - inside[mask]
    g2 = grads(inside)
    assert not all(torch.equal(a, b) for a, b in zip(g0, g2))


def test_dice_ce_matches_an_independent_computation():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    mask = torch.rand(2, 8, 8) > 0.3
    p = torch.softmax(logits, 1).numpy()
    t, m = target.numpy(), mask.numpy()
    ce = -np.log(np.take_along_axis(p, t[:, None], 1)[:, 0])[m].mean()
    dices = []
    for c in (1, 2):
        pc = p[:, c][m]
        tc = (t == c)[m]
        dices.append((2 * (pc * tc).sum() + 1e-5) / (pc.sum() + tc.sum() + 1e-5))
    expect = ce + 1 - np.mean(dices)
    assert float(dice_ce_loss(logits, target, mask)) == pytest.approx(expect, rel=1e-5)


def test_deep_supervision_targets_and_weights():
    t = torch.arange(64).reshape(1, 8, 8)
    m = torch.ones(1, 8, 8, dtype=torch.bool)
    td, md = downsample_target(t, m, (4, 4))
    assert torch.equal(td, t[:, ::2, ::2]) and md.shape == (1, 4, 4)
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert deep_supervision_weights(3, (1.0,)) == [1.0, 0.0, 0.0]


# --------------------------------------------------------------------------- loop
def test_loss_decreases_and_validation_improves_on_an_overfit_case():
    pair = _pair()
    tr, va = split_reviewed_slices([pair], val_fraction=0.2, seed=0)
    res = train(_net(), _spec(), tr, va, _cfg(epochs=4, steps_per_epoch=6, lr=1e-2))
    first, last = np.mean(res.step_losses[:4]), np.mean(res.step_losses[-4:])
    assert last < 0.7 * first, res.step_losses
    assert res.best_val_dice > res.initial_val_dice
    assert res.stopped == "completed" and res.steps == 24 and len(res.history) == 5


def test_seeded_runs_are_identical_and_resume_matches_uninterrupted(tmp_path):
    tr, va = split_reviewed_slices([_pair()], seed=0)
    cfg = _cfg(epochs=3, steps_per_epoch=3, augment=True)
    a = train(_net(), _spec(), tr, va, cfg)
    b = train(_net(), _spec(), tr, va, cfg, checkpoint_dir=tmp_path / "b")
    assert a.step_losses == b.step_losses
    # interrupt after the 2nd epoch's checkpoint, then resume
    job = train_job(_net(), _spec(), tr, va, cfg, checkpoint_dir=tmp_path / "c")
    for p in job:
        if p.stage == "validate" and p.info["epoch"] == 2:
            job.close()
            break
    c = train(_net(seed=9), _spec(), tr, va, cfg, checkpoint_dir=tmp_path / "c", resume=True)
    assert c.step_losses == a.step_losses
    assert c.best_val_dice == a.best_val_dice
    for k, v in a.state_dict.items():
        assert torch.allclose(v.float(), c.state_dict[k].float(), atol=1e-6), k


def test_time_budget_and_stop_event_end_the_run_with_best_weights():
    import threading

    tr, va = split_reviewed_slices([_pair()], seed=0)
    res = train(_net(), _spec(), tr, va, _cfg(epochs=50, max_seconds=1e-6))
    assert res.stopped == "time_budget" and res.steps == 1
    ev = threading.Event()
    job = train_job(_net(), _spec(), tr, va, _cfg(epochs=50), stop=ev)
    seen = 0
    try:
        while True:
            p = next(job)
            if p.stage == "train":
                seen += 1
                if seen == 2:
                    ev.set()
    except StopIteration as stop:
        res = stop.value
    assert res.stopped == "stopped" and res.steps == 2
    assert res.best_val_dice == max(h["val_dice"] for h in res.history)


# --------------------------------------------------------------------------- fine-tune
@pytest.fixture
def registry_with_base(tmp_path):
    reg = ModelRegistry(tmp_path / "models", shipped_root=tmp_path / "none")
    entry = reg.add_version("tiny", _net(), _spec())
    reg.set_active("tiny", entry.version)
    return reg, load_model(entry.path)


def _snapshot_registry(reg):
    return [(e.ref, e.path.is_dir()) for e in reg.list_models()], reg.active("tiny")


def test_finetune_saves_a_version_that_reloads_and_reproduces(registry_with_base):
    reg, base = registry_with_base
    base_state = {k: v.clone() for k, v in base.network.state_dict().items()}
    pair = _pair(np.array([1, 1, 1, 1, 1, 0], bool))
    copies = [pair.image.data.copy(), pair.labels.data.copy(), pair.reviewed.copy()]
    for arr in (pair.image.data, pair.labels.data, pair.reviewed):
        arr.setflags(write=False)
    job = finetune_job(base, [pair], _cfg(epochs=3, steps_per_epoch=5, lr=1e-2), reg)
    res = drain(job)
    # the user's arrays and the loaded base are untouched
    for a, b in zip(copies, (pair.image.data, pair.labels.data, pair.reviewed)):
        assert np.array_equal(a, b)
    for k, v in base.network.state_dict().items():
        assert torch.equal(v, base_state[k])
    assert res.entry is not None and res.entry.version == "2"
    assert res.before_dice == res.train_result.initial_val_dice
    assert res.activated == (res.after_dice > res.before_dice)
    assert reg.active("tiny").version == ("2" if res.activated else "1")
    new = load_model(res.entry.path)
    assert new.spec.parent == base.model_id
    prov = new.spec.provenance
    assert prov["val_dice_before"] == res.before_dice and prov["val_dice_after"] == res.after_dice
    assert prov["data"][0]["sha256"] == data_hash(pair)
    x = torch.randn(1, 1, 16, 16)
    net = AttentionUNet(ARCH)
    net.load_state_dict(res.train_result.state_dict)
    with torch.no_grad():
        assert torch.allclose(net.eval()(x), new.network(x), atol=1e-5)


def test_worse_finetune_keeps_previous_active(registry_with_base, monkeypatch):
    reg, base = registry_with_base
    import napari_attnseg.training.finetune as ft

    real = ft.train_job

    def worse(*a, **k):
        res = yield from real(*a, **k)
        import dataclasses

        return dataclasses.replace(res, best_val_dice=res.initial_val_dice - 0.1)

    monkeypatch.setattr(ft, "train_job", worse)
    res = drain(finetune_job(base, [_pair()], _cfg(epochs=1, steps_per_epoch=1), reg))
    assert not res.activated and res.entry is None and res.unchanged  # worse: nothing saved at all
    assert "nothing saved" in res.note and "tiny@1 stays active" in res.note
    assert [e.version for e in reg.versions("tiny")] == ["1"]
    assert reg.active("tiny").version == "1" and reg.get("tiny").version == "1"


def test_stop_and_failures_leave_the_registry_consistent(registry_with_base, monkeypatch):
    reg, base = registry_with_base
    before = _snapshot_registry(reg)
    # Stop: close the generator mid-training
    job = finetune_job(base, [_pair()], _cfg(epochs=5), reg)
    for p in job:
        if p.stage == "train" and p.done == 2:
            job.close()
            break
    assert _snapshot_registry(reg) == before
    # too few reviewed slices: refused before anything runs
    with pytest.raises(TrainingDataError, match="need at least"):
        finetune_job(base, [_pair(np.eye(6, dtype=bool)[2])], _cfg(), reg)
    # corrupted input: labels outside the model's classes
    img, lab = _volume()
    bad = lab.data.copy()
    bad[0, 0, 0] = 5
    with pytest.raises(ValueError, match="outside the model's classes"):
        drain(finetune_job(base, [TrainingPair(img, lab.with_data(bad))], _cfg(), reg))
    # a poisoned batch -> NaN loss -> clear error
    calls = {"n": 0}
    real_build = BatchSampler.build

    def poisoned(self, seeds):
        out = real_build(self, seeds)
        calls["n"] += 1
        if calls["n"] == 3:
            out[0][:] = np.nan
        return out

    monkeypatch.setattr(BatchSampler, "build", poisoned)
    with pytest.raises(TrainingError, match="loss became nan"):
        drain(finetune_job(base, [_pair()], _cfg(epochs=3), reg))
    assert _snapshot_registry(reg) == before
    assert not any(p.name.startswith(".") for p in (reg.root / "tiny").iterdir() if p.is_dir())
    assert load_model(reg.get("tiny").path).weights_sha256 == base.weights_sha256


# --------------------------------------------------------------------------- readers
def test_decathlon_and_pair_list_readers(tmp_path):
    nib = pytest.importorskip("nibabel")
    root = tmp_path / "Dataset001_Tiny"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    img, lab = _volume()
    for case in ("case_a", "case_b"):
        nib.save(nib.Nifti1Image(img.data.T.astype(np.float32), np.diag([1, 1, 2, 1])),
                 root / "imagesTr" / f"{case}_0000.nii.gz")
        nib.save(nib.Nifti1Image(lab.data.T.astype(np.uint8), np.diag([1, 1, 2, 1])),
                 root / "labelsTr" / f"{case}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "name": "Tiny", "channel_names": {"0": "MRI"}, "labels": {"background": 0, "disc": 1},
        "file_ending": ".nii.gz", "licence": "CC0"}))
    pairs, info = read_dataset(root)
    assert len(pairs) == 2 and info.label_names == {0: "background", 1: "disc"} and info.modality == "MR"
    assert pairs[0].image.shape == (6, 20, 24) and np.array_equal(pairs[0].labels.data, lab.data)
    lst = tmp_path / "pairs.csv"
    lst.write_text("image,label\n" + "\n".join(
        f"{root}/imagesTr/{c}_0000.nii.gz,{root}/labelsTr/{c}.nii.gz" for c in ("case_a", "case_b")))
    pairs2, _ = read_dataset(lst)
    assert len(pairs2) == 2 and np.array_equal(pairs2[1].labels.data, lab.data)


def test_hc18_reader(shared_data):
    pairs, info = read_hc18(shared_data / "hc18", limit=3)
    assert len(pairs) == 3 and info.modality == "US"
    p = pairs[0]
    assert p.image.shape == p.labels.shape and set(np.unique(p.labels.data)) <= {0, 1}
    assert p.group == p.image.source.split("/")[-1][:3] and 0.05 < p.image.spacing[0] < 0.33


def test_3d_model_trains_on_patches_with_sliding_window_validation():
    arch3 = UNetConfig(spatial_dims=3, channels=(4, 8))
    spec3 = ModelSpec(arch=arch3, label_names={0: "background", 1: "disc"}, modality="MR", patch_size=(8, 8, 8))
    img, lab = _volume(z=12)
    pairs = [TrainingPair(img, lab, np.arange(12) < 8), TrainingPair(img, lab, np.arange(12) >= 8)]
    torch.manual_seed(0)
    res = train(AttentionUNet(arch3), spec3, pairs[:1], pairs[1:],
                _cfg(epochs=1, steps_per_epoch=2, batch_size=2, patch_size=(8, 8, 8)))
    assert res.steps == 2 and 0.0 <= res.best_val_dice <= 1.0 and len(res.history) == 2


def _fake_train(monkeypatch, **changes):
    import dataclasses

    import napari_attnseg.training.finetune as ft

    real = ft.train_job

    def fake(*a, **k):
        res = yield from real(*a, **k)
        return dataclasses.replace(res, **{k2: (v(res) if callable(v) else v) for k2, v in changes.items()})

    monkeypatch.setattr(ft, "train_job", fake)


def test_a_stopped_run_is_not_activated_unless_asked(registry_with_base, monkeypatch):
    reg, base = registry_with_base
    _fake_train(monkeypatch, stopped="stopped", best_epoch=1,
                best_val_dice=lambda r: r.initial_val_dice + 0.1)
    res = drain(finetune_job(base, [_pair()], _cfg(epochs=1, steps_per_epoch=1), reg))
    assert res.stopped and not res.activated and not res.unchanged
    assert reg.active("tiny").version == "1" and res.entry.version == "2"
    assert "NOT activated because training was stopped" in res.note
    assert load_model(res.entry.path).spec.provenance["improved"] is True
    res = drain(finetune_job(base, [_pair()], _cfg(epochs=1, steps_per_epoch=1), reg,
                             activate_on_stop=True))
    assert res.activated and reg.active("tiny").version == "3"


def test_no_improvement_within_the_budget_is_flagged_and_not_activated(registry_with_base, monkeypatch):
    reg, base = registry_with_base
    _fake_train(monkeypatch, stopped="time_budget", best_epoch=0)
    res = drain(finetune_job(base, [_pair()], _cfg(epochs=1, steps_per_epoch=1), reg))
    assert res.unchanged and not res.activated and res.entry is None  # no version equal to the base
    assert [e.version for e in reg.versions("tiny")] == ["1"] and reg.active("tiny").version == "1"
