"""``attnseg train DATASET (-o MODEL_DIR | --name NAME)``: train an attention U-Net from a
dataset folder (Medical Segmentation Decathlon / nnU-Net layout, the HC18 layout) or a text
file of ``image,label`` lines. Writes the model folder (and/or a registry version) with a run
log (``history.csv``, ``curves.png``) and a model card (``README.md``). Resumable with
``--resume``; runs unchanged under ``torchrun`` (only rank 0 writes).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import platform
import shlex
import sys
from pathlib import Path

from ._scribbles import DEFAULT_PAIRWISE_WEIGHT

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset folder (dataset.json + imagesTr/labelsTr, or HC18) or pair-list file")
    parser.add_argument("-o", "--output", default=None, help="model folder to write")
    parser.add_argument("--name", default=None, help="register the model under this name in the registry")
    parser.add_argument("--spatial-dims", type=int, choices=(2, 3), default=2, help="2D (slices) or 3D (patches)")
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 128, 256],
                        help="feature maps per resolution level (default 16 32 64 128 256)")
    parser.add_argument("--context-slices", type=int, default=0, metavar="K",
                        help="2.5D (2D models): also give the network K neighbouring slices on each side "
                             "as input channels (default 0: the slice alone)")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8, help="global batch size")
    parser.add_argument("--patch-size", type=int, nargs="+", default=None,
                        help="training patch (default 256 256 in 2D, 96 96 96 in 3D)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-seconds", type=float, default=None, help="time budget in seconds")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of cases held out (by subject)")
    parser.add_argument("--patience", type=int, default=10, help="early-stopping patience in epochs (0: off)")
    parser.add_argument("--no-attention", action="store_true", help="plain U-Net (no attention gates)")
    parser.add_argument("--no-deep-supervision", action="store_true")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--no-mirror", action="store_true",
                        help="no flips or 90-degree rotations in the augmentation (for classes named by side: "
                             "left/right kidney, parotid)")
    parser.add_argument("--fg-sampling", default="voxel", choices=("voxel", "class"),
                        help="the foreground-centred third of the crops: on a random labelled voxel (voxel), or on "
                             "a class drawn uniformly first (class: organs in few slices are seen as often as "
                             "big ones)")
    parser.add_argument("--labels-dir", default="labelsTr",
                        help="train on the label files of this folder of a Decathlon dataset instead of labelsTr "
                             "(e.g. ACDC's scribblesTr)")
    parser.add_argument("--ignore-label", type=int, default=None,
                        help="sparse labels (scribbles): this value marks unannotated voxels, which carry no loss "
                             "(partial cross-entropy, no Dice term; ACDC's scribbles use 4)")
    parser.add_argument("--pairwise-weight", type=float, default=None,
                        help="weight of the gated-CRF term that spreads sparse labels along image edges "
                             f"(default {DEFAULT_PAIRWISE_WEIGHT} with --ignore-label, else 0)")
    parser.add_argument("--dice-weight", type=float, default=None,
                        help="weight of the Dice term (default 1, or 0 with --ignore-label: partial "
                             "cross-entropy only); 1 for dense pseudo-labels (attnseg pseudolabel)")
    parser.add_argument("--init-model", default=None,
                        help="start from this model's weights (name, name@version or folder) instead of random "
                             "ones; its architecture and label names must match this run's (a 2D model of "
                             "one slice may start a --context-slices run: the neighbours begin at weight 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--checkpoint-dir", default=None, help="where checkpoints go (default: beside the output)")
    parser.add_argument("--precision", default="fp32", help="fp32 or bf16")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N cases")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def write_run_log(folder: Path, history: list[dict]) -> None:
    """``history.csv`` and ``curves.png`` (training loss and validation Dice per epoch)."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = ["epoch", "step", "loss", "val_dice", "lr", "seconds"]
    with open(folder / "history.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for row in history:
            w.writerow(row)
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.5))
    ax1 = fig.add_subplot(1, 2, 1)
    ax2 = fig.add_subplot(1, 2, 2)
    tr = [(h["epoch"], h["loss"]) for h in history if h.get("loss") is not None]
    if tr:
        ax1.plot(*zip(*tr), marker="o")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss (Dice + CE)")
    ax2.plot([h["epoch"] for h in history], [h["val_dice"] for h in history], marker="o", color="C1")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation Dice")
    fig.tight_layout()
    fig.savefig(folder / "curves.png", dpi=100)


def model_card(spec, info, result, train_cases, val_cases, config, device: str) -> str:
    import torch

    lines = [
        f"# {spec.name} (version {spec.version})",
        "",
        f"{spec.arch.spatial_dims}D attention U-Net (channels {list(spec.arch.channels)}, attention "
        f"{'on' if spec.arch.attention else 'off'}, deep supervision {'on' if spec.arch.deep_supervision else 'off'}) "
        f"segmenting {', '.join(v for k, v in spec.label_names.items() if k)} in {spec.modality or 'unspecified'} images.",
        "",
        "## Training data",
        f"- Dataset: {info.name} — {info.description}".rstrip(" —"),
        f"- Source: {info.source}",
        f"- Licence: {info.licence or 'not stated by the dataset; check before redistributing'}",
        f"- Split (by case/subject, seed {config.seed}): {len(train_cases)} training, {len(val_cases)} validation cases",
        f"- Validation cases: {', '.join(val_cases[:30])}{' ...' if len(val_cases) > 30 else ''}",
        "",
        "## Metrics",
        f"- Validation Dice (foreground, pooled over validation voxels): best {result.best_val_dice:.4f} "
        f"(epoch {result.best_epoch}); before training {result.initial_val_dice:.4f}",
        f"- Stopped: {result.stopped} after {result.steps} steps",
        "",
        "## Training",
        f"- Time: {result.seconds:.1f} s",
        f"- Hardware: {platform.processor() or platform.machine()}, {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        f"- Parameters: {config.to_dict()}",
        f"- Command: `attnseg {' '.join(shlex.quote(a) for a in sys.argv[1:])}`",
        "",
        "## Where it will not work",
        f"Only {spec.modality or 'the training'} images similar to the training data "
        "(acquisition, field of view, anatomy) are in scope; other modalities, anatomies or scanners "
        "need fine-tuning. Not a medical device; not for diagnosis.",
        "",
    ]
    return "\n".join(lines)


def _label_keys(names) -> dict:
    """Label names compared for meaning, not spelling: case, spaces, punctuation and a
    parenthesised remark are ignored ('SpinalCord' = 'spinal cord', 'background (or not
    contoured)' = 'background')."""
    import re

    return {int(k): re.sub(r"[^a-z0-9]", "", re.sub(r"\(.*?\)", "", str(v).lower())) for k, v in dict(names).items()}


def _init_weights(network, ref: str, arch, label_names) -> tuple[str, str | None]:
    """Load ``ref``'s weights into ``network`` (warm start); a different architecture or label
    set is a ModelError naming the difference. Returns the model's id for the provenance and
    the orientation it declares (its weights learned that frame)."""
    from ..errors import ModelError
    from ..model.checkpoint import load_model
    from ..model.registry import ModelRegistry

    loaded = load_model(ModelRegistry().resolve(ref))
    inflate = (loaded.spec.arch.in_channels == 1 and arch.in_channels > 1 and arch.spatial_dims == 2
               and dataclasses.replace(loaded.spec.arch, in_channels=arch.in_channels) == arch)
    if loaded.spec.arch != arch and not inflate:
        raise ModelError(f"--init-model {ref}: its architecture {loaded.spec.arch} differs from this run's {arch}")
    if _label_keys(loaded.spec.label_names) != _label_keys(label_names):
        raise ModelError(f"--init-model {ref}: its labels {dict(loaded.spec.label_names)} differ from the "
                         f"dataset's {dict(label_names)}")
    state = loaded.network.state_dict()
    if inflate:
        state = inflated_state(state, network.state_dict())
        logger.info("starting from the weights of %s, the neighbouring slices at weight 0", loaded.model_id)
    else:
        logger.info("starting from the weights of %s", loaded.model_id)
    network.load_state_dict(state)
    return loaded.model_id, getattr(loaded.spec, "orientation", None)


def inflated_state(state: dict, target: dict) -> dict:
    """A one-slice 2D network's weights for a 2.5D network of the same architecture: every input
    convolution's kernel goes to the middle channel, the neighbours' start at 0, so the
    network first computes exactly what the one-slice model did."""
    out = dict(state)
    for key, want in target.items():
        have = state[key]
        if have.shape == want.shape:
            continue
        if have.ndim != want.ndim or have.shape[1] != 1 or have.shape[:1] + have.shape[2:] != want.shape[:1] + want.shape[2:]:
            raise ValueError(f"cannot inflate {key}: {tuple(have.shape)} -> {tuple(want.shape)}")
        w = want.new_zeros(want.shape)
        w[:, want.shape[1] // 2] = have[:, 0]
        out[key] = w
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from ..model.attention_unet import AttentionUNet, UNetConfig
    from ..model.checkpoint import ModelSpec, save_model
    from ..model.registry import ModelRegistry, default_root
    from ..training.dataset import read_dataset, split_by_group, training_orientation
    from ..training.distributed import cleanup, device_for_rank, init_from_env
    from ..training.loop import TrainConfig, train_job
    from ._scribbles import sparse_train_options
    from ._common import run_with_progress

    if not args.output and not args.name:
        raise ValueError("give an output folder (-o MODEL_DIR) and/or a registry name (--name NAME)")
    if args.output and Path(args.output).exists() and not args.resume:
        raise ValueError(f"{args.output} already exists; choose another output folder")
    rank, world = init_from_env()
    device = device_for_rank()
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs, info = read_dataset(args.dataset, limit=args.limit, labels_dir=args.labels_dir,
                               ignore_label=args.ignore_label)
    dims = args.spatial_dims
    patch = tuple(args.patch_size or ((256, 256) if dims == 2 else (96, 96, 96)))
    from .._options import MAX_CONTEXT_SLICES

    context = int(args.context_slices)
    if not 0 <= context <= MAX_CONTEXT_SLICES:
        raise ValueError(f"--context-slices must be in 0..{MAX_CONTEXT_SLICES}, got {context}")
    if context and dims != 2:
        raise ValueError("--context-slices applies to 2D models (--spatial-dims 2) only")
    arch = UNetConfig(spatial_dims=dims, in_channels=2 * context + 1, out_channels=len(info.label_names),
                      channels=tuple(args.channels), attention=not args.no_attention,
                      deep_supervision=not args.no_deep_supervision)
    modality = info.modality or ""
    spec = ModelSpec(arch=arch, label_names=info.label_names, modality=modality,
                     normalization={"preset": modality} if modality else {}, patch_size=patch,
                     name=args.name or Path(args.output).name, context_slices=context)
    config = TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, max_seconds=args.max_seconds,
                         batch_size=args.batch_size, lr=args.lr, patch_size=patch, augment=not args.no_augment,
                         mirror=not args.no_mirror, fg_sampling=args.fg_sampling,
                         val_fraction=args.val_fraction, early_stopping_patience=args.patience, seed=args.seed,
                         precision=args.precision, deep_supervision=not args.no_deep_supervision,
                         num_threads=args.threads, **sparse_train_options(args))
    train_pairs, val_pairs = split_by_group(pairs, args.val_fraction, seed=args.seed)
    ckpt = Path(args.checkpoint_dir) if args.checkpoint_dir else (
        Path(args.output).with_name(Path(args.output).name + ".checkpoint") if args.output
        else default_root() / ".checkpoints" / args.name)
    torch.manual_seed(args.seed)
    network = AttentionUNet(arch)
    parent, orientation = (_init_weights(network, args.init_model, arch, info.label_names)
                           if args.init_model else (None, None))
    if dims == 2:  # the frame its slices are cut in: the parent's where it declares one
        orientation = orientation or training_orientation(pairs)
        spec = dataclasses.replace(spec, orientation=orientation)
        if orientation:
            logger.info("slices cut as %s (rows toward %s, columns toward %s)", orientation,
                        orientation[1], orientation[2])
    logger.info("training on %d cases, validating on %d (%s)", len(train_pairs), len(val_pairs), info.name)
    job = train_job(network, spec, train_pairs, val_pairs, config, checkpoint_dir=ckpt, resume=args.resume,
                    device=device)
    result = run_with_progress(job, desc="train", quiet=args.quiet or rank != 0)
    if rank == 0:
        network.load_state_dict(result.state_dict)
        network.to("cpu")
        train_cases = [p.group or (p.image.source or "") for p in train_pairs]
        val_cases = [p.group or (p.image.source or "") for p in val_pairs]
        provenance = {"kind": "train", "dataset": info.name, "data_source": info.source, "licence": info.licence,
                      "labels": args.labels_dir, "ignore_label": args.ignore_label,
                      "train_cases": sorted(set(train_cases)), "val_cases": sorted(set(val_cases)),
                      "params": config.to_dict(), "best_val_dice": result.best_val_dice,
                      "initial_val_dice": result.initial_val_dice, "seconds": result.seconds,
                      "steps": result.steps, "stopped": result.stopped, "world_size": world}
        if parent:
            provenance["init_model"] = parent
        spec = dataclasses.replace(spec, provenance=provenance)
        folders = []
        if args.name:
            entry = ModelRegistry().add_version(args.name, network, spec, activate=True)  # a new training run is what the name means
            folders.append(entry.path)
            spec = dataclasses.replace(spec, version=entry.version)
            print(f"registered {entry.ref} at {entry.path}")
        if args.output:
            folders.append(save_model(args.output, network, spec))
            print(f"wrote {args.output}")
        card = model_card(spec, info, result, sorted(set(train_cases)), sorted(set(val_cases)), config, str(device))
        for folder in folders:
            write_run_log(Path(folder), result.history)
            (Path(folder) / "README.md").write_text(card, encoding="utf-8")
        if not args.checkpoint_dir:  # the default checkpoint folder is only for resuming this run
            import shutil

            shutil.rmtree(ckpt, ignore_errors=True)
        print(f"best validation Dice {result.best_val_dice:.4f} (before {result.initial_val_dice:.4f}), "
              f"{result.steps} steps in {result.seconds:.1f} s, stopped: {result.stopped}")
    cleanup()
    return 0
