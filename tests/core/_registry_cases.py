"""Bad-input cases for the model registry, model folders and the fine-tune (used by
test_bad_input_registry.py). Each case names the result class it must have:

* ``ERROR``: our error type (:class:`~napari_attnseg.errors.AttnsegError`) with a message naming
  the file (or model / labels) and the problem;
* ``WARNING``: handled, with a stated caveat or a logged warning;
* ``CORRECT``: the correct result.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from napari_attnseg.model.attention_unet import AttentionUNet, UNetConfig
from napari_attnseg.model.checkpoint import ModelSpec
from napari_attnseg.volume import Volume

ERROR, WARNING, CORRECT = "clear error", "handled with a warning", "correct output"
ARCH = UNetConfig(channels=(4, 8, 16))  # divisor 4
NAN = float("nan")


def tiny_net(seed: int = 0) -> AttentionUNet:
    torch.manual_seed(seed)
    return AttentionUNet(ARCH).eval()


def tiny_spec(name: str = "tiny", **kw) -> ModelSpec:
    return ModelSpec(arch=ARCH, label_names={0: "background", 1: "organ"}, modality="CT",
                     normalization={"preset": "CT"}, patch_size=(32, 32), name=name, **kw)


def tamper(folder, change, keep_hash: bool = False) -> None:
    """Apply ``change(config)`` to ``folder/config.json``; the config hash is dropped (an
    "intended" edit, so that the value check itself is exercised) unless ``keep_hash``."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    change(config)
    if not keep_hash:
        config.pop("config_sha256", None)
    path.write_text(json.dumps(config))


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(c):
        d = c
        for k in keys[:-1]:
            d = d.setdefault(k, {})
        d[keys[-1]] = value
    return change


def _drop(*keys):
    def change(c):
        d = c
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]
    return change


#: (id, change to config.json, regex the message must match); every one is a clear ERROR
CONFIG_CASES = [
    ("norm-scale-0", _set("normalization", {"preset": "CT", "shift": 0.0, "scale": 0.0}), r"normalization\.scale.*positive"),
    ("norm-scale-negative", _set("normalization", {"shift": 0.0, "scale": -2.0}), r"normalization\.scale.*positive"),
    ("norm-scale-nan", _set("normalization", {"shift": 0.0, "scale": NAN}), r"normalization\.scale.*finite"),
    ("norm-std-0", _set("normalization", {"mean": 3.0, "std": 0}), r"normalization\.std.*positive"),
    ("norm-mean-without-std", _set("normalization", {"mean": 3.0}), r"normalization\.std.*missing"),
    ("norm-clip-inverted", _set("normalization", {"clip": [1000, -1000]}), r"normalization\.clip.*inverted"),
    ("norm-clip-empty", _set("normalization", {"clip": [5, 5]}), r"normalization\.clip.*inverted or empty"),
    ("norm-clip-nan", _set("normalization", {"clip": [NAN, 100]}), r"normalization\.clip.*finite"),
    ("norm-clip-inf", _set("normalization", {"clip": [-1000, float("inf")]}), r"normalization\.clip.*finite"),
    ("norm-clip-string", _set("normalization", {"clip": "wide"}), r"normalization\.clip.*two numbers"),
    ("norm-percentiles-range", _set("normalization", {"percentiles": [-1, 120]}), r"percentiles.*0\.\.100"),
    ("norm-unknown-key", _set("normalization", {"scal": 2.0}), r"unknown entries \['scal'\]"),
    ("norm-preset-unknown", _set("normalization", {"preset": "PET"}), r"preset.*CT, MR, US"),
    ("norm-not-object", _set("normalization", [1, 2]), r"'normalization' must be a JSON object"),
    ("zoom-1e-9", _set("inplane_zoom", 1e-9), r"inplane_zoom.*got 1e-09"),
    ("zoom-absurd", _set("inplane_zoom", 1e9), r"inplane_zoom.*got 1e\+09"),
    ("zoom-zero", _set("inplane_zoom", 0), r"inplane_zoom"),
    ("zoom-nan", _set("inplane_zoom", NAN), r"inplane_zoom.*finite"),
    ("zoom-string", _set("inplane_zoom", "big"), r"inplane_zoom.*finite number"),
    ("patch-16384", _set("patch_size", [16384, 16384]), r"patch_size.*4\.\.4096"),
    ("patch-zero", _set("patch_size", [0, 0]), r"patch_size.*4\.\.4096, got 0"),
    ("patch-not-multiple", _set("patch_size", [30, 32]), r"multiples of the network's divisor 4"),
    ("patch-wrong-length", _set("patch_size", [32]), r"patch_size.*2 integers"),
    ("patch-float", _set("patch_size", [32.5, 32]), r"patch_size.*integer"),
    ("patch-bool", _set("patch_size", [True, True]), r"patch_size.*integer"),
    ("patch-string", _set("patch_size", "32x32"), r"patch_size.*list"),
    ("channels-one-level", _set("arch", "channels", [4]), r"arch\.channels.*2\.\.8"),
    ("channels-huge", _set("arch", "channels", [4, 1_000_000]), r"arch\.channels.*1\.\.2048"),
    ("channels-negative", _set("arch", "channels", [4, -8]), r"arch\.channels"),
    ("channels-float", _set("arch", "channels", [4, 8.5, 16]), r"arch\.channels.*integer"),
    ("out-channels-0", _set("arch", "out_channels", 0), r"arch\.out_channels.*2\.\.256"),
    ("in-channels-0", _set("arch", "in_channels", 0), r"arch\.in_channels"),
    ("spatial-dims-4", _set("arch", "spatial_dims", 4), r"arch\.spatial_dims.*2\.\.3"),
    ("attention-string", _set("arch", "attention", "no"), r"arch\.attention.*true or false"),
    ("dropout-1.5", _set("arch", "dropout", 1.5), r"arch\.dropout"),
    ("arch-not-object", _set("arch", "unet"), r"'arch' must be a JSON object"),
    ("arch-missing", _drop("arch"), r"'arch' is missing"),
    ("labels-missing-class", _set("label_names", {"0": "background"}), r"label_names.*exactly the classes 0, 1"),
    ("labels-extra-class", _set("label_names", {"0": "bg", "1": "organ", "5": "x"}), r"label_names.*exactly"),
    ("labels-not-string", _set("label_names", {"0": "background", "1": 3}), r"label_names\.1.*string"),
    ("labels-empty-name", _set("label_names", {"0": "background", "1": " "}), r"label_names\.1.*empty"),
    ("labels-list", _set("label_names", ["background", "organ"]), r"label_names.*object"),
    ("spacing-zero", _set("target_spacing", [0, 1]), r"target_spacing.*got \[0, 1\]"),
    ("spacing-nan", _set("target_spacing", [NAN, 1]), r"target_spacing.*finite"),
    ("spacing-wrong-length", _set("target_spacing", [1, 1, 1]), r"target_spacing.*2 numbers"),
    ("weights-file-traversal", _set("weights_file", "../other/weights.pt"), r"weights_file.*plain file name"),
    ("weights-sha-malformed", _set("weights_sha256", "xyz"), r"weights_sha256.*64"),
    ("name-path", _set("name", "../evil"), r"'name' must use letters"),
    ("version-path", _set("version", "../../1"), r"'version'"),
    ("format-other", _set("format", "onnx"), r"not a napari-attnseg model"),
    ("format-version-newer", _set("format_version", 99), r"newer than this napari-attnseg"),
    ("format-version-string", _set("format_version", "one"), r"format_version.*integer"),
    ("provenance-list", _set("provenance", []), r"'provenance' must be a JSON object"),
]

#: (id, raw bytes for config.json, regex): files that are not a plain, small JSON object
RAW_CONFIG_CASES = [
    ("deep-100000", b"[" * 100_000 + b"]" * 100_000, r"nested too deeply|nested \d+ levels"),
    ("deep-500-in-provenance", None, r"nested \d+ levels deep"),  # built in the test (valid JSON)
    ("not-json", b"{not json", r"config.json is corrupt \(not valid JSON"),
    ("not-object", b"[1, 2, 3]", r"expected a JSON object"),
    ("not-utf8", b'{"arch": "\xff\xfe"}', r"config.json cannot be read"),
    ("empty", b"", r"config.json is corrupt"),
]

#: (id, active.json content or a marker, regex): every one is a clear ERROR naming active.json
ACTIVE_CASES = [
    ("corrupt-json", b"{bad", r"active.json.*is corrupt"),
    ("dangling-version", b'{"version": "7"}', r"makes version 7 of 'tiny' the active one, but that version does not exist"),
    ("version-path", b'{"version": "../1"}', r"active.json.*corrupt.*invalid model version"),
    ("no-version-key", b'{"ver": "1"}', r"corrupt.*expected \{\"version\": \"N\"\}"),
    ("a-list", b'["1"]', r"corrupt"),
    ("version-bool", b'{"version": true}', r"corrupt.*invalid model version"),
    ("huge", b'{"version": "1", "pad": "' + b"x" * 100_000 + b'"}', r"corrupt.*bytes"),
    ("a-directory", None, r"active.json.*corrupt"),  # active.json is a folder
    ("deleted", "delete", r"has versions 1, 2 but no active version.*missing"),
]

#: (id, reference, regex): references that must never leave the registry
REF_CASES = [
    ("version-dotdot", "tiny@../evil", r"invalid version '\.\./evil'"),
    ("version-abs", "tiny@/etc/passwd", r"invalid version"),
    ("version-empty", "tiny@", r"give a version after '@'"),
    ("name-abs-ref", "/etc@1", r"model folder /etc@1 does not exist"),
    ("name-dotdot-ref", "..@1", r"does not exist|neither a model name"),
    ("name-space", "my model", r"neither a model name"),
    ("empty", "  ", r"no model given"),
    ("unknown", "tiyn", r"no model named 'tiyn'.*did you mean 'tiny'"),
    ("missing-version", "tiny@9", r"has no version 9"),
]

#: (id, name): names refused by add_version / get / set_active / versions
BAD_NAMES = [("dotdot", "../evil"), ("absolute", "/tmp/evil"), ("slash", "a/b"), ("hidden", ".x"),
             ("json", "active.json"), ("empty", ""), ("space", "a b"), ("not-str", 5)]


def phantom(z: int = 6, y: int = 20, x: int = 24, seed: int = 0, fg_slices=None):
    """A tiny MR-like volume with a disc on ``fg_slices`` (default: every slice) and its labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:y, :x]
    img = np.zeros((z, y, x), np.float32)
    lab = np.zeros((z, y, x), np.uint8)
    for k in range(z) if fg_slices is None else fg_slices:
        disc = (yy - 10) ** 2 + (xx - 12 + (k % 3)) ** 2 < (4 + k % 3) ** 2
        lab[k] = disc
        img[k] = disc * 300.0
    img += rng.normal(0, 15, img.shape).astype(np.float32)
    spacing = (2.0, 1.0, 1.0)
    return (Volume(img, spacing, modality="CT", source="scan.nii.gz"),
            Volume(lab, spacing, is_labels=True, source="scan_corrected.nii.gz"))
