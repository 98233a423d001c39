"""Full validation of a model folder's ``config.json`` and the hash that covers it.

``config.json`` decides how a scan is normalised, resized and cut into patches before the
network sees it, so a bad value there is as harmful as corrupted weights: a normalisation scale
of 0, an inverted clip window or an ``inplane_zoom`` of 1e-9 all turn every scan into an
all-background mask without any error. :func:`check_config` therefore checks every entry's type
and range before anything is built from it, and :func:`parse_config` refuses files that are
not plain, reasonably sized JSON (a 100 000-deep nesting, a 1 GB file).

**config_sha256.** :func:`config_hash` is the sha256 of the canonical JSON form (sorted keys, no
whitespace) of the config *without* its ``config_sha256`` entry. ``save_model`` writes it; a
config that records one must match it (any edit after saving is refused, like a replaced
weights file). It is a new, optional entry, so folders saved before it existed still load;
their values are validated all the same.

Every problem raises :class:`~napari_attnseg.errors.ModelError` naming the file and the entry.
Pure Python (no torch).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

from ..errors import ModelError

__all__ = ["CONFIG_HASH_KEY", "MAX_CONFIG_BYTES", "check_config", "config_hash", "parse_config"]

CONFIG_HASH_KEY = "config_sha256"
MAX_CONFIG_BYTES = 16 << 20  # training histories make provenance long, never this long
MAX_DEPTH = 64
MAX_CLASSES = 256
MAX_CHANNELS = 2048
MAX_LEVELS = 8
MAX_IN_CHANNELS = 64
MAX_PATCH_VOXELS = 1 << 24  # 4096 x 4096 or 256 x 256 x 256
MAX_PATCH_SIDE = {2: 4096, 3: 512}
ZOOM_RANGE = (1.0 / 64.0, 8.0)
SPACING_RANGE = (1e-4, 1e3)  # mm
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_NORM_KEYS = ("preset", "clip", "percentiles", "mean", "std", "shift", "scale")
_PRESETS = ("CT", "MR", "US")


def parse_config(text: str | bytes, path: str | Path) -> dict[str, Any]:
    """The JSON object in ``text`` (the content of ``path``), or :class:`ModelError`."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ModelError(f"{path} is {len(text)} bytes, too large for a model config (at most "
                         f"{MAX_CONFIG_BYTES} bytes); it is not a napari-attnseg config.json")
    try:
        config = json.loads(text)
    except RecursionError:
        raise ModelError(f"{path} is corrupt: its JSON is nested too deeply to be a model config") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is corrupt (not valid JSON: {exc})") from exc
    if not isinstance(config, dict):
        raise ModelError(f"{path} is corrupt (expected a JSON object, got {type(config).__name__})")
    depth = _depth(config)
    if depth > MAX_DEPTH:
        raise ModelError(f"{path} is corrupt: its JSON is nested {depth} levels deep (a model config "
                         f"needs far fewer than {MAX_DEPTH})")
    return config


def _depth(obj: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        value, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        if isinstance(value, dict):
            stack.extend((v, level + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, level + 1) for v in value)
    return deepest


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``config`` without its ``config_sha256`` entry."""
    body = {k: v for k, v in config.items() if k != CONFIG_HASH_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


# --------------------------------------------------------------------------- type helpers
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class _Checker:
    def __init__(self, path: str | Path):
        self.path = path

    def fail(self, key: str, problem: str) -> ModelError:
        return ModelError(f"{self.path} is invalid: '{key}' {problem}")

    def integer(self, key: str, v: Any, lo: int, hi: int) -> int:
        if not _is_int(v):
            raise self.fail(key, f"must be an integer, got {v!r}")
        if not lo <= v <= hi:
            raise self.fail(key, f"must be in {lo}..{hi}, got {v}")
        return v

    def number(self, key: str, v: Any) -> float:
        if not _is_number(v):
            raise self.fail(key, f"must be a finite number, got {v!r}")
        return float(v)

    def boolean(self, key: str, v: Any) -> None:
        if not isinstance(v, bool):
            raise self.fail(key, f"must be true or false, got {v!r}")

    def text(self, key: str, v: Any, *, empty: bool = True, limit: int = 200) -> str:
        if not isinstance(v, str):
            raise self.fail(key, f"must be a string, got {v!r}")
        if not empty and not v.strip():
            raise self.fail(key, "must not be empty")
        if len(v) > limit:
            raise self.fail(key, f"is {len(v)} characters long (at most {limit})")
        return v

    def pair(self, key: str, v: Any) -> tuple[float, float]:
        if not isinstance(v, list) or len(v) != 2:
            raise self.fail(key, f"must be a list [low, high] of two numbers, got {v!r}")
        lo, hi = (self.number(key, x) for x in v)
        if not lo < hi:
            raise self.fail(key, f"is inverted or empty: low {lo} must be below high {hi}")
        return lo, hi


# --------------------------------------------------------------------------- the check
def check_config(config: dict[str, Any], path: str | Path) -> None:
    """Validate every entry of a parsed ``config.json`` (see the module docstring).

    Raises :class:`ModelError` ``"<path> is invalid: '<entry>' <problem>"``, or for a recorded
    ``config_sha256`` that does not match the content, a message saying the file was edited.
    """
    c = _Checker(path)
    recorded = config.get(CONFIG_HASH_KEY)
    if recorded is not None:
        if not isinstance(recorded, str) or not _HEX64.match(recorded):
            raise c.fail(CONFIG_HASH_KEY, f"must be 64 lowercase hex digits, got {recorded!r}")
        actual = config_hash(config)
        if actual != recorded:
            raise ModelError(
                f"{path} was changed after the model was saved: its content hashes to {actual[:12]}..., "
                f"but it records {CONFIG_HASH_KEY} {recorded[:12]}...; restore the file (or the whole folder), "
                f"re-save the model, or, if the edit is intended, delete the '{CONFIG_HASH_KEY}' entry"
            )
    for key in ("arch", "label_names"):
        if key not in config:
            raise c.fail(key, "is missing")
    dims, n_classes, divisor = _check_arch(c, config["arch"])
    _check_labels(c, config["label_names"], n_classes)
    _check_preprocessing(c, config, dims, divisor)
    _check_identity(c, config)


def _check_arch(c: _Checker, arch: Any) -> tuple[int, int, int]:
    if not isinstance(arch, dict):
        raise c.fail("arch", f"must be a JSON object, got {type(arch).__name__}")
    dims = c.integer("arch.spatial_dims", arch.get("spatial_dims", 2), 2, 3)
    c.integer("arch.in_channels", arch.get("in_channels", 1), 1, MAX_IN_CHANNELS)
    n_classes = c.integer("arch.out_channels", arch.get("out_channels", 2), 2, MAX_CLASSES)
    chans = arch.get("channels", [16, 32, 64, 128, 256])
    if not isinstance(chans, list) or not 2 <= len(chans) <= MAX_LEVELS:
        raise c.fail("arch.channels", f"must be a list of 2..{MAX_LEVELS} integers (one per level), got {chans!r}")
    for ch in chans:
        c.integer("arch.channels", ch, 1, MAX_CHANNELS)
    for key in ("norm", "skip_fusion"):
        if key in arch:
            c.text(f"arch.{key}", arch[key], empty=False, limit=32)
    for key in ("attention", "deep_supervision"):
        if key in arch:
            c.boolean(f"arch.{key}", arch[key])
    if "dropout" in arch:
        p = c.number("arch.dropout", arch["dropout"])
        if not 0.0 <= p < 1.0:
            raise c.fail("arch.dropout", f"must be in [0, 1), got {p}")
    return dims, n_classes, 2 ** (len(chans) - 1)


def _check_labels(c: _Checker, labels: Any, n_classes: int) -> None:
    if not isinstance(labels, dict):
        raise c.fail("label_names", f"must be an object {{\"0\": \"background\", ...}}, got {labels!r}")
    expected = [str(i) for i in range(n_classes)]
    if sorted(labels, key=lambda k: (len(k), k)) != expected:
        raise c.fail("label_names", f"must name exactly the classes {', '.join(expected)} of the network "
                                    f"(arch.out_channels = {n_classes}), got keys {sorted(labels)}")
    for k, v in labels.items():
        c.text(f"label_names.{k}", v, empty=False)


def _check_preprocessing(c: _Checker, config: dict[str, Any], dims: int, divisor: int) -> None:
    patch = config.get("patch_size", [256, 256])
    if not isinstance(patch, list) or len(patch) != dims:
        raise c.fail("patch_size", f"must be a list of {dims} integers for a {dims}D network, got {patch!r}")
    side = MAX_PATCH_SIDE[dims]
    for p in patch:
        c.integer("patch_size", p, divisor, side)
        if p % divisor:
            raise c.fail("patch_size", f"{patch} must be multiples of the network's divisor {divisor}")
    if math.prod(patch) > MAX_PATCH_VOXELS:
        raise c.fail("patch_size", f"{patch} has {math.prod(patch)} voxels (at most {MAX_PATCH_VOXELS})")
    spacing = config.get("target_spacing")
    if spacing is not None:
        if not isinstance(spacing, list) or len(spacing) != dims:
            raise c.fail("target_spacing", f"must be null or {dims} numbers (mm), got {spacing!r}")
        for s in spacing:
            s = c.number("target_spacing", s)
            if not SPACING_RANGE[0] <= s <= SPACING_RANGE[1]:
                raise c.fail("target_spacing", f"values must be in {SPACING_RANGE[0]}..{SPACING_RANGE[1]} mm, "
                                               f"got {spacing}")
    zoom = c.number("inplane_zoom", config.get("inplane_zoom", 1.0))
    if not ZOOM_RANGE[0] <= zoom <= ZOOM_RANGE[1]:
        raise c.fail("inplane_zoom", f"must be in {ZOOM_RANGE[0]:g}..{ZOOM_RANGE[1]:g} (the factor slices are "
                                     f"resized by before the network), got {zoom:g}")
    rng = config.get("inplane_spacing")
    if rng is not None:
        if dims != 2:
            raise c.fail("inplane_spacing", f"applies to 2D models only (this one is {dims}D)")
        if not isinstance(rng, list) or len(rng) not in (2, 4):
            raise c.fail("inplane_spacing", f"must be null or [lo, hi] pixel sizes in mm (or [lo, hi, lo, hi]: "
                                            f"rows, columns), got {rng!r}")
        values = [c.number("inplane_spacing", v) for v in rng]
        for lo, hi in zip(values[0::2], values[1::2]):
            if not SPACING_RANGE[0] <= lo <= hi <= SPACING_RANGE[1]:
                raise c.fail("inplane_spacing", f"must be [lo, hi] with {SPACING_RANGE[0]} <= lo <= hi <= "
                                                f"{SPACING_RANGE[1]} mm, got {rng}")
    _check_normalization(c, config.get("normalization", {}))
    steps = config.get("postprocess", [])
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        raise c.fail("postprocess", f"must be a list of step names, got {steps!r}")
    from .._options import POSTPROCESS_STEPS

    unknown = [s for s in steps if s not in POSTPROCESS_STEPS]
    if unknown:
        raise c.fail("postprocess", f"has unknown steps {unknown} (known: {', '.join(POSTPROCESS_STEPS)})")
    if not isinstance(config.get("tta", False), bool):
        raise c.fail("tta", f"must be true or false (mirror test-time augmentation by default), "
                            f"got {config['tta']!r}")
    from .._options import MAX_CONTEXT_SLICES

    k = c.integer("context_slices", config.get("context_slices", 0), 0, MAX_CONTEXT_SLICES)
    if k and dims != 2:
        raise c.fail("context_slices", f"applies to 2D models only (this one is {dims}D)")
    cin = config.get("arch", {}).get("in_channels", 1)
    if k and cin != 2 * k + 1:
        raise c.fail("context_slices", f"{k} needs arch.in_channels = {2 * k + 1} (the slice and {k} "
                                       f"neighbours on each side), got {cin}")
    code = config.get("orientation")
    if code is not None:
        from ..orientation import is_orientation_code

        if dims != 2:
            raise c.fail("orientation", f"applies to 2D models only (this one is {dims}D)")
        if not is_orientation_code(code):
            raise c.fail("orientation", "must be null or 3 letters, one each of S/I, A/P and R/L, "
                                        "the slices' first (the directions of the network's slice, "
                                        f"row and column axes, e.g. \"SAL\"), got {code!r}")


    if "views" in config:
        from .views import views_problem

        problem = views_problem(config["views"], dims)
        if problem:
            raise c.fail("views", problem)


def _check_normalization(c: _Checker, norm: Any) -> None:
    if not isinstance(norm, dict):
        raise c.fail("normalization", f"must be a JSON object, got {norm!r}")
    unknown = sorted(set(norm) - set(_NORM_KEYS))
    if unknown:
        raise c.fail("normalization", f"has unknown entries {unknown} (known: {', '.join(_NORM_KEYS)})")
    preset = norm.get("preset")
    if preset not in (None, "") and (not isinstance(preset, str) or preset.strip().upper() not in _PRESETS):
        raise c.fail("normalization.preset", f"must be one of {', '.join(_PRESETS)} or null, got {preset!r}")
    if norm.get("clip") is not None:
        c.pair("normalization.clip", norm["clip"])
    if norm.get("percentiles") is not None:
        lo, hi = c.pair("normalization.percentiles", norm["percentiles"])
        if lo < 0 or hi > 100:
            raise c.fail("normalization.percentiles", f"must lie in 0..100, got {[lo, hi]}")
    for centre, spread in (("mean", "std"), ("shift", "scale")):
        a, b = norm.get(centre), norm.get(spread)
        if (a is None) != (b is None):
            raise c.fail(f"normalization.{centre if a is None else spread}",
                         f"is missing: '{centre}' and '{spread}' go together")
        if a is None:
            continue
        c.number(f"normalization.{centre}", a)
        s = c.number(f"normalization.{spread}", b)
        if not s > 1e-8:
            raise c.fail(f"normalization.{spread}", f"must be positive (intensities are divided by it), got {s}")


def _check_identity(c: _Checker, config: dict[str, Any]) -> None:
    if "modality" in config and config["modality"] is not None:
        c.text("modality", config["modality"], limit=32)
    if "name" in config:
        name = c.text("name", config["name"], empty=False, limit=128)
        if not _NAME.match(name):
            raise c.fail("name", f"must use letters, digits, '.', '_' or '-', got {name!r}")
    if "version" in config:
        v = config["version"]
        v = str(v) if _is_int(v) else c.text("version", v, empty=False, limit=64)
        if not _NAME.match(v):
            raise c.fail("version", f"must be a number or a plain word, got {v!r}")
    if config.get("parent") is not None:
        c.text("parent", config["parent"], limit=300)
    for key in ("provenance",):
        if key in config and not isinstance(config[key], dict):
            raise c.fail(key, f"must be a JSON object, got {type(config[key]).__name__}")
    if "format_version" in config:
        c.integer("format_version", config["format_version"], 1, 10 ** 6)
    wf = config.get("weights_file", "weights.pt")
    if not isinstance(wf, str) or not _FILE.match(wf) or wf in (".", ".."):
        raise c.fail("weights_file", f"must be a plain file name inside the model folder, got {wf!r}")
    sha = config.get("weights_sha256")
    if sha is not None and (not isinstance(sha, str) or not _HEX64.match(sha)):
        raise c.fail("weights_sha256", f"must be 64 lowercase hex digits, got {sha!r}")
