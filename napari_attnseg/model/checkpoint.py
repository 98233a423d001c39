"""Self-describing model folders: ``config.json`` (architecture, labels, preprocessing,
provenance) next to ``weights.pt`` (a plain ``state_dict``, loaded with ``weights_only=True``).

Layout of a model folder::

    <folder>/config.json   {"format": "napari-attnseg-model", "format_version": 1,
                            "arch": {...UNetConfig...}, "label_names": {"0": "background", ...},
                            "modality": "CT", "normalization": {...}, "target_spacing": [...],
                            "patch_size": [...], "name": ..., "version": ..., "parent": ...,
                            "provenance": {...}, "weights_file": "weights.pt",
                            "weights_sha256": "...", "created": "2025-...Z"}
    <folder>/weights.pt    torch.save(state_dict)

Saving is atomic (everything is written into a temporary folder beside the target, then
renamed), so a cancelled or failed save never leaves a half-written model; the temporary folder's
name carries the writer's process id (:func:`temp_name`) so that the registry can remove what a
killed writer left behind. ``config.json`` is validated in full when read and when written
(:mod:`.config_check`) and covered by ``config_sha256``; weights holding NaN or infinity are
refused at load. Nothing here downloads anything.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError, WriteError
from ._atomic import temp_name
from .attention_unet import AttentionUNet, UNetConfig
from .config_check import CONFIG_HASH_KEY, MAX_CONFIG_BYTES, check_config, config_hash, parse_config

logger = logging.getLogger(__name__)

FORMAT = "napari-attnseg-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"
_RESERVED = ("format", "format_version", "weights_file", "weights_sha256", "created", CONFIG_HASH_KEY)

__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "LoadedModel", "ModelSpec", "load_model", "read_spec", "save_model"]


def _tuple_of(value: Any, kind: type, what: str) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{what} must be a list of numbers, got {value!r}")
    try:
        return tuple(kind(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a list of numbers, got {value!r}") from exc


_SIDE_WORDS = {"right": "left", "left": "right", "r": "l", "l": "r"}
#: words of structures named by a side that are not each other's mirror image: a mirrored right
#: ventricle is still a right ventricle by its shape (ACDC's model is trained on flipped hearts)
_NOT_MIRROR_PAIRS = ("ventric", "atri", "auricle", "heart", "lobe")


def _other_side(name: str) -> str | None:
    """``name`` with its side swapped ("right parotid" -> "left parotid", "Parotid_L" ->
    "Parotid_R", the case kept), or None when it names no side."""
    import re

    parts = re.split(r"([\s_\-.]+)", name)
    words = [p.lower() for p in parts]
    if any(w.startswith(stem) for w in words for stem in _NOT_MIRROR_PAIRS):
        return None
    for i, w in enumerate(words):
        other = _SIDE_WORDS.get(w)
        if other is None or (len(w) == 1 and i not in (0, len(parts) - 1)):
            continue  # single letters count only at either end ("L_kidney", "Kidney_R")
        if len(w) == 1 and len(parts) == 1:
            continue
        p = parts[i]
        swapped = other.upper() if p.isupper() else (other.capitalize() if p[:1].isupper() else other)
        return "".join(parts[:i] + [swapped] + parts[i + 1:])
    return None


def mirror_label_permutation(label_names: dict) -> tuple[int, ...] | None:
    """``perm`` with ``probs[perm]`` the class probabilities of the left-right mirror image: each
    class whose name names a side swaps with the class of the other side (matched by name, case
    ignored: kidneys, parotids, lungs; not the heart's chambers or an organ's lobes, which are
    no mirror pair); ``None`` when no pair exists. A model with such labels that was not trained
    on mirrored images is not shown them (:attr:`ModelSpec.mirrors`)."""
    names = {int(k): str(v) for k, v in label_names.items()}
    index = {v.lower(): k for k, v in names.items()}
    perm = list(range(max(names) + 1)) if names else []
    for k, v in names.items():
        other = _other_side(v)
        if other is not None and other.lower() in index:
            perm[k] = index[other.lower()]
    return tuple(perm) if perm != sorted(perm) else None


@dataclass(frozen=True)
class ModelSpec:
    """Everything besides the weights that a model needs to be used correctly.

    ``label_names`` maps every class index ``0 .. arch.out_channels - 1`` to a name (0 is the
    background). ``normalization`` describes the intensity preprocessing (read by
    ``inference.preprocess``), ``target_spacing`` the voxel spacing in mm (array axis order)
    the model was trained at (``None``: use the image's own spacing), ``patch_size`` the
    sliding-window patch (array axis order, multiples of the network's divisor).
    ``provenance`` records data source, training parameters, hashes and metrics.
    ``inplane_zoom`` (2D models) is the factor each slice is resized by before the network
    (0.25: the model was trained on images downsampled x4); outputs are resized back.
    ``anatomy`` names what the model segments in ("heart", "fetal head", "phantom" for the
    synthetic demo data; "" when not declared): with ``modality`` it decides which images the
    model is chosen for (:mod:`napari_attnseg.model.choose`).
    ``postprocess`` lists the steps applied to every foreground class of the predicted labels,
    per 2D slice (:data:`napari_attnseg.inference.postprocess.POSTPROCESS_STEPS`: e.g. one
    filled head fitted by an ellipse for the fetal-head model); empty: the argmax as it is.
    ``tta``: run with mirror test-time augmentation unless the caller says otherwise
    (``PredictConfig(tta=None)``, the default, follows it): declared where it was measured to
    help on held-out data (the card says by how much and at what cost).
    ``context_slices`` (2D models, "2.5D"): the network also sees this many neighbouring slices
    on each side of the one it segments, as extra input channels
    (``arch.in_channels = 2 * context_slices + 1``; built by
    :func:`napari_attnseg.inference.preprocess.stack_context`); 0: the slice alone.
    ``inplane_spacing`` (2D models): ``(lo, hi)``, the in-plane pixel sizes in mm the model was
    trained on, or ``(lo, hi, lo, hi)`` for its rows and its columns apart (a coronal view:
    rows along the slice spacing, columns across the patient). A slice whose (known) pixel size lies outside is resized to the nearest end
    before the network, and the result back to the slice's grid, so a scanner's 0.7 mm cine or
    1 mm CT is seen at the training scale; a nominal spacing (no geometry in the file) is used
    as it is. ``None``: the image's own pixels (:func:`napari_attnseg.inference.preprocess.
    inplane_factors`).
    ``orientation`` (2D models): the directions the network's slice, row and column axes ran
    toward in training, one letter each from S/I, A/P and R/L ("SAL": slices toward superior,
    rows toward anterior, columns toward the patient's left). A scan whose orientation is known
    is transposed and reversed to run that way before the network and back after
    (:func:`napari_attnseg.inference.preprocess.slice_reorientation`), so a model whose labels
    name a side never sees a mirror image. ``None``: the axes in world order, as stored.
    """

    arch: UNetConfig
    label_names: dict[int, str]
    modality: str = ""
    normalization: dict = field(default_factory=dict)
    target_spacing: tuple[float, ...] | None = None
    patch_size: tuple[int, ...] = (256, 256)
    name: str = "model"
    version: str = "1"
    parent: str | None = None
    provenance: dict = field(default_factory=dict)
    inplane_zoom: float = 1.0
    anatomy: str = ""
    postprocess: tuple[str, ...] = ()
    tta: bool = False
    context_slices: int = 0
    inplane_spacing: tuple[float, ...] | None = None
    orientation: str | None = None
    #: further 2D views averaged with this model's probabilities (:mod:`.views`)
    views: tuple[dict, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.arch, UNetConfig):
            raise ValueError(f"arch must be a UNetConfig, got {type(self.arch).__name__}")
        dims, n_out = self.arch.spatial_dims, self.arch.out_channels
        if not isinstance(self.label_names, dict):
            raise ValueError(f"label_names must be a dict {{index: name}}, got {type(self.label_names).__name__}")
        try:
            labels = {int(k): str(v) for k, v in self.label_names.items()}
        except (TypeError, ValueError) as exc:
            raise ValueError(f"label_names keys must be class indices, got {list(self.label_names)!r}") from exc
        if set(labels) != set(range(n_out)):
            raise ValueError(
                f"label_names must name every class 0..{n_out - 1} of the network (out_channels={n_out}), "
                f"got indices {sorted(labels)}"
            )
        object.__setattr__(self, "label_names", dict(sorted(labels.items())))
        patch = _tuple_of(self.patch_size, int, "patch_size")
        if len(patch) != dims or any(p < 1 for p in patch):
            raise ValueError(f"patch_size must be {dims} positive integers for a {dims}D network, got {self.patch_size!r}")
        bad = [p for p in patch if p % self.arch.divisor]
        if bad:
            raise ValueError(
                f"patch_size {patch} must be multiples of the network's divisor {self.arch.divisor} (bad: {bad})"
            )
        object.__setattr__(self, "patch_size", patch)
        if self.target_spacing is not None:
            spacing = _tuple_of(self.target_spacing, float, "target_spacing")
            if len(spacing) != dims or any(not s > 0 for s in spacing):
                raise ValueError(
                    f"target_spacing must be {dims} positive numbers (mm, array axis order), got {self.target_spacing!r}"
                )
            object.__setattr__(self, "target_spacing", spacing)
        try:
            zoom = float(self.inplane_zoom)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"inplane_zoom must be a number, got {self.inplane_zoom!r}") from exc
        if not 0 < zoom <= 8:
            raise ValueError(f"inplane_zoom must be in (0, 8], got {zoom}")
        object.__setattr__(self, "inplane_zoom", zoom)
        if self.inplane_spacing is not None:
            rng = _tuple_of(self.inplane_spacing, float, "inplane_spacing")
            if dims != 2:
                raise ValueError(f"inplane_spacing applies to 2D models only (this one is {dims}D)")
            if len(rng) not in (2, 4) or not all(0 < rng[i] <= rng[i + 1] for i in range(0, len(rng), 2)):
                raise ValueError(f"inplane_spacing must be [lo, hi] pixel sizes in mm with 0 < lo <= hi "
                                 f"(or [lo, hi, lo, hi]: rows, columns), got {self.inplane_spacing!r}")
            object.__setattr__(self, "inplane_spacing", rng)
        if self.orientation is not None:
            from ..orientation import is_orientation_code

            if dims != 2:
                raise ValueError(f"orientation applies to 2D models only (this one is {dims}D)")
            if not is_orientation_code(self.orientation):
                raise ValueError("orientation must be 3 letters, one each of S/I, A/P and R/L, the slices' "
                                 f"first (e.g. 'SAL'), got {self.orientation!r}")
        from .views import normalized_views, views_problem

        problem = views_problem(self.views, dims)
        if problem:
            raise ValueError(f"views {problem}")
        object.__setattr__(self, "views", normalized_views(self.views))
        for name in ("normalization", "provenance"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be a dict, got {type(getattr(self, name)).__name__}")
        if not str(self.name).strip():
            raise ValueError("model name must not be empty")
        object.__setattr__(self, "name", str(self.name))
        object.__setattr__(self, "version", str(self.version))
        object.__setattr__(self, "modality", str(self.modality or ""))
        object.__setattr__(self, "anatomy", str(self.anatomy or "").strip())
        if self.parent is not None:
            object.__setattr__(self, "parent", str(self.parent))
        if isinstance(self.postprocess, str) or not isinstance(self.postprocess, (list, tuple)):
            raise ValueError(f"postprocess must be a list of step names, got {self.postprocess!r}")
        steps = tuple(str(s) for s in self.postprocess)
        if steps:
            from .._options import POSTPROCESS_STEPS

            unknown = [s for s in steps if s not in POSTPROCESS_STEPS]
            if unknown:
                raise ValueError(f"unknown postprocess step(s) {unknown}; known: {', '.join(POSTPROCESS_STEPS)}")
        object.__setattr__(self, "postprocess", steps)
        if not isinstance(self.tta, bool):
            raise ValueError(f"tta must be true or false, got {self.tta!r}")
        from .._options import MAX_CONTEXT_SLICES

        k = self.context_slices
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_CONTEXT_SLICES:
            raise ValueError(f"context_slices must be an integer in 0..{MAX_CONTEXT_SLICES}, got {k!r}")
        if k and dims != 2:
            raise ValueError(f"context_slices applies to 2D models only (this one is {dims}D)")
        if k and self.arch.in_channels != 2 * k + 1:
            raise ValueError(f"context_slices {k} needs arch.in_channels = {2 * k + 1} (the slice and {k} "
                             f"neighbours on each side), got {self.arch.in_channels}")

    @property
    def mirror_permutation(self) -> tuple[int, ...] | None:
        """The class order of a left-right mirror image (:func:`mirror_label_permutation` of the
        label names: "right kidney" <-> "left kidney"); ``None`` when no label names a side."""
        return mirror_label_permutation(self.label_names)

    @property
    def mirrors(self) -> bool:
        """Whether the model was trained on mirrored images, so that mirror TTA, the flip
        uncertainty and flip augmentation in a fine-tune show it images like its training
        ones. Its training's record decides (``provenance.params.mirror``: ACDC true, CHAOS and
        OpenKBP false: four-flip TTA took them to 0.19 and 0.33 mean Dice); without one, not
        when its labels name the sides of a mirror pair (:func:`mirror_label_permutation`)."""
        params = (self.provenance or {}).get("params") or {}
        if isinstance(params.get("mirror"), bool):  # what its training did decides
            return params["mirror"]
        return self.mirror_permutation is None

    @property
    def n_classes(self) -> int:
        """Number of classes, background included (``arch.out_channels``)."""
        return self.arch.out_channels

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (label keys become strings, tuples lists)."""
        return {
            "arch": self.arch.to_dict(),
            "label_names": {str(k): v for k, v in self.label_names.items()},
            "modality": self.modality,
            "normalization": self.normalization,
            "target_spacing": list(self.target_spacing) if self.target_spacing is not None else None,
            "patch_size": list(self.patch_size),
            "name": self.name,
            "version": self.version,
            "parent": self.parent,
            "provenance": self.provenance,
            "inplane_zoom": self.inplane_zoom,
            "anatomy": self.anatomy,
            **({"postprocess": list(self.postprocess)} if self.postprocess else {}),
            **({"tta": True} if self.tta else {}),
            **({"context_slices": self.context_slices} if self.context_slices else {}),
            **({"inplane_spacing": list(self.inplane_spacing)} if self.inplane_spacing else {}),
            **({"orientation": self.orientation} if self.orientation else {}),
            **({"views": [dict(v) for v in self.views]} if self.views else {}),
        }

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> ModelSpec:
        """Rebuild from :meth:`to_json_dict` output (the keys ``save_model`` adds are ignored).

        Raises ``ValueError`` naming the missing or bad entry.
        """
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, got {type(d).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        for key in ("arch", "label_names"):
            if key not in d:
                raise ValueError(f"the entry '{key}' is missing")
        unknown = sorted(set(d) - fields - set(_RESERVED))
        if unknown:
            logger.warning("ignoring unknown model config entries: %s", ", ".join(unknown))
        kw = {k: v for k, v in d.items() if k in fields}
        kw["arch"] = UNetConfig.from_dict(d["arch"])
        if not isinstance(kw["label_names"], dict):
            raise ValueError(f"label_names must be an object {{index: name}}, got {kw['label_names']!r}")
        return cls(**kw)


@dataclass(frozen=True)
class LoadedModel:
    """A network ready for inference (eval mode) with its spec and where it came from."""

    network: AttentionUNet
    spec: ModelSpec
    folder: Path
    weights_sha256: str
    #: ``(LoadedModel, axes, weight)`` per view of ``spec.views`` (:mod:`.views`)
    views: tuple = ()

    @property
    def model_id(self) -> str:
        """``"name@version:<first 12 hex digits of the weights' sha256>"``."""
        return f"{self.spec.name}@{self.spec.version}:{self.weights_sha256[:12]}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(folder: str | Path, network: AttentionUNet, spec: ModelSpec, *, overwrite: bool = False) -> Path:
    """Write ``network``'s weights and ``spec`` as a model folder; returns the folder.

    Atomic: written into a temporary folder beside ``folder``, then renamed into place. An
    existing ``folder`` is refused (:class:`WriteError`) unless ``overwrite=True``. The
    network's architecture must equal ``spec.arch`` (:class:`ModelError` otherwise).
    """
    folder = Path(folder)
    if not isinstance(network, AttentionUNet):
        raise ModelError(f"save_model needs an AttentionUNet, got {type(network).__name__}")
    if network.config != spec.arch:
        raise ModelError(
            f"the network's architecture {network.config.to_dict()} differs from the spec's {spec.arch.to_dict()}; "
            "build the spec with arch=network.config"
        )
    if spec.views:
        raise ModelError(f"save_model writes one network; {spec.name}'s views ({', '.join(v['folder'] for v in spec.views)}) "
                         "are model folders of their own: save it with views=() (a fine-tune tunes the model alone)")
    if folder.exists() and not overwrite:
        raise WriteError(folder, "a model folder already exists here; choose another folder or pass overwrite=True")
    if folder.exists() and not folder.is_dir():
        raise WriteError(folder, "exists and is not a folder")
    parent = folder.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(parent, f"cannot create the folder: {exc}") from exc
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in network.state_dict().items()}
    bad = _non_finite(state)
    if bad:
        raise ModelError(f"refusing to save {folder}: the weights hold NaN or infinite values ({_describe_keys(bad)})")
    tmp = parent / temp_name(folder.name)
    old: Path | None = None
    try:
        tmp.mkdir()
        weights = tmp / WEIGHTS_FILE
        try:
            torch.save(state, weights)
        except RuntimeError as exc:  # torch reports a full disk as "PytorchStreamWriter failed ..."
            raise OSError(str(exc)) from exc
        config = spec.to_json_dict()
        config.update(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            weights_file=WEIGHTS_FILE,
            weights_sha256=_sha256(weights),
            created=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        config[CONFIG_HASH_KEY] = config_hash(config)
        check_config(config, folder / CONFIG_FILE)  # never write what could not be read back
        with open(tmp / CONFIG_FILE, "w", encoding="utf-8") as fh:
            json.dump(config, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        if folder.exists():
            old = parent / temp_name(folder.name, "old")
            os.replace(folder, old)
        os.replace(tmp, folder)
    except OSError as exc:
        if old is not None and not folder.exists():
            os.replace(old, folder)
            old = None
        raise WriteError(folder, f"could not save the model: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)
    logger.info("saved model %s@%s to %s", spec.name, spec.version, folder)
    return folder


def _non_finite(state: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``state`` holding NaN or infinity."""
    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _read_config(folder: Path) -> dict[str, Any]:
    if not folder.exists():
        raise ModelError(f"model folder {folder} does not exist")
    if not folder.is_dir():
        raise ModelError(f"{folder} is not a model folder (expected a folder holding {CONFIG_FILE} and {WEIGHTS_FILE})")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ModelError(f"{path} is missing: {folder} is not a model folder (save one with save_model)")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ModelError(f"{path} is {path.stat().st_size} bytes, too large for a model config; "
                             "it is not a napari-attnseg config.json")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} cannot be read: {exc}") from exc
    config = parse_config(text, path)
    fmt = config.get("format", FORMAT)
    if fmt != FORMAT:
        raise ModelError(f"{path} is not a napari-attnseg model (format {fmt!r})")
    version = config.get("format_version", FORMAT_VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise ModelError(
            f"{path} has format version {version}, newer than this napari-attnseg understands "
            f"({FORMAT_VERSION}); upgrade napari-attnseg"
        )
    check_config(config, path)
    return config


def read_spec(folder: str | Path) -> ModelSpec:
    """The :class:`ModelSpec` of a model folder, without loading weights (cheap)."""
    folder = Path(folder)
    return _spec_from(_read_config(folder), folder)


def _spec_from(config: dict[str, Any], folder: Path) -> ModelSpec:
    try:
        return ModelSpec.from_json_dict(config)
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{folder / CONFIG_FILE} is invalid: {exc}") from exc


def _describe_keys(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (and {len(keys) - limit} more)" if len(keys) > limit else "")


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model folder written by :func:`save_model`; the network is in eval mode.

    Raises :class:`ModelError` with a clear message for a missing folder, a missing, corrupt,
    invalid or edited ``config.json`` (:func:`.config_check.check_config`), a missing or
    corrupted weights file (checked against the recorded sha256), weights holding NaN or
    infinity, or weights that do not match the architecture (naming the keys).
    """
    folder = Path(folder)
    config = _read_config(folder)
    spec = _spec_from(config, folder)
    weights = folder / str(config.get("weights_file", WEIGHTS_FILE))
    if not weights.is_file():
        raise ModelError(f"the weights file {weights} is missing; the model folder {folder} is incomplete")
    sha = _sha256(weights)
    recorded = config.get("weights_sha256")
    if recorded and recorded != sha:
        raise ModelError(
            f"the weights file {weights} is corrupted or was replaced: its sha256 is {sha[:12]}..., "
            f"but {CONFIG_FILE} records {str(recorded)[:12]}...; restore the folder or re-save the model"
        )
    try:
        state = torch.load(weights, map_location=torch.device(device), weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file; re-raised with the path
        raise ModelError(f"the weights file {weights} is corrupted or not a PyTorch state_dict: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"the weights file {weights} does not hold a state_dict (a mapping of names to tensors)")
    bad = _non_finite(state)
    if bad:
        raise ModelError(f"the weights file {weights} holds NaN or infinite values ({_describe_keys(bad)}); "
                         "the model would give meaningless masks: restore the folder or re-train")
    network = AttentionUNet(spec.arch)
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_describe_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_describe_keys(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches (file != architecture): {_describe_keys(shapes)}")
        raise ModelError(
            f"the weights in {weights} do not match the architecture in {CONFIG_FILE} "
            f"({spec.arch.to_dict()}): " + "; ".join(parts)
        )
    network.load_state_dict(state, strict=True)
    network.to(torch.device(device)).eval()
    views = ()
    if spec.views:
        from .views import load_views

        views = load_views(folder, spec, device, load_model)
    return LoadedModel(network=network, spec=spec, folder=folder, weights_sha256=sha, views=views)
