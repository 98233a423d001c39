"""The training loop under torchrun with 2 gloo processes matches a 1-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch
    from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
    from napari_attnseg.model.checkpoint import ModelSpec
    from napari_attnseg.training import TrainConfig, TrainingPair, split_reviewed_slices, train
    from napari_attnseg.training.distributed import cleanup, init_from_env
    from napari_attnseg.volume import Volume

    def run(out=None):
        torch.set_num_threads(1)
        rank, world = init_from_env("gloo")
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[:20, :24]
        lab = np.stack([((yy - 10) ** 2 + (xx - 12) ** 2 < (4 + k) ** 2) for k in range(5)]).astype(np.uint8)
        img = lab * 100.0 + rng.normal(0, 15, lab.shape)
        pair = TrainingPair(Volume(img, (1, 1, 1), modality="MR"), Volume(lab, (1, 1, 1), is_labels=True))
        arch = UNetConfig(channels=(4, 8, 16), norm="instance")
        spec = ModelSpec(arch=arch, label_names={0: "bg", 1: "fg"}, modality="MR", patch_size=(16, 16))
        torch.manual_seed(0)
        net = AttentionUNet(arch)
        tr, va = split_reviewed_slices([pair], seed=0)
        cfg = TrainConfig(epochs=2, steps_per_epoch=4, batch_size=4, patch_size=(16, 16), lr=3e-3,
                          augment=True, early_stopping_patience=0)
        res = train(net, spec, tr, va, cfg)
        if rank == 0 and out:
            with open(out, "w") as fh:
                json.dump({"world": world, "losses": res.step_losses,
                           "val": [h["val_dice"] for h in res.history]}, fh)
        cleanup()
        return res

    if __name__ == "__main__":
        run(sys.argv[1])
    """
)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT)
    out2 = tmp_path / "two.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=0",
           "--rdzv_backend=c10d", "--rdzv_endpoint=localhost:0", str(script), str(out2)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out1 = tmp_path / "one.json"
    proc1 = subprocess.run([sys.executable, str(script), str(out1)], env=env, capture_output=True, text=True,
                           timeout=300)
    assert proc1.returncode == 0, proc1.stderr[-3000:]
    two, one = json.loads(out2.read_text()), json.loads(out1.read_text())
    assert two["world"] == 2 and one["world"] == 1
    assert len(two["losses"]) == len(one["losses"]) == 8
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(two["val"], one["val"], atol=1e-3)
