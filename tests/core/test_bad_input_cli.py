"""Bad input and unsafe outputs through ``attnseg`` (issue 12): each case must exit 2 with one
line naming the file (``error``) and leave the inputs untouched, or run correctly.

``python tests/core/test_bad_input_cli.py`` prints the table of observed classes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _bad_inputs import case_registry, ct_like, dicom_series, scan_file, tiny_model  # noqa: E402
from _bad_inputs import cli_class as _cli  # noqa: E402

CASES, case = case_registry()


def _predict(tmp, *extra, scan=None):
    scan = scan or scan_file(tmp)
    return ["predict", scan, "--model", tiny_model(tmp), "--device", "cpu", "-q", *extra]


def _labels(tmp, name, shift=(0.0, 0.0, 0.0), data=None):
    lab = np.zeros((30, 27, 5), np.uint8)
    lab[8:20, 6:18, 1:4] = 1
    return scan_file(tmp, name, shift, lab if data is None else data)


# ---------------------------------------------------------------------- outputs over inputs
@case("error")
def predict_output_is_the_input(tmp):
    scan = scan_file(tmp)
    return _cli(_predict(tmp, "-o", scan, scan=scan), protect=[scan], names=[scan.name])


@case("error")
def predict_output_is_a_hard_link_to_the_input(tmp):
    scan = scan_file(tmp)
    os.link(scan, tmp / "link.nii.gz")
    return _cli(_predict(tmp, "-o", tmp / "link.nii.gz", scan=scan), protect=[scan])


@case("error")
def predict_probabilities_equal_output(tmp):
    out = tmp / "seg.nii.gz"
    return _cli(_predict(tmp, "-o", out, "--probabilities", out), names=["seg.nii.gz"])


@case("error")
def predict_sidecars_collide(tmp):
    return _cli(_predict(tmp, "-o", tmp / "a.nii.gz", "--probabilities", tmp / "a.nii"))


@case("error")
def predict_output_overwrites_the_inputs_sidecar(tmp):
    scan = scan_file(tmp)
    (tmp / "scan.json").write_text("{}")
    return _cli(_predict(tmp, "-o", tmp / "scan.nii", scan=scan), protect=[tmp / "scan.json"])


@case("error")
def predict_output_folder_missing(tmp):
    return _cli(_predict(tmp, "-o", tmp / "nowhere" / "seg.nii.gz"), names=["nowhere"])


@case("error")
def predict_output_is_a_folder(tmp):
    (tmp / "out.nii.gz").mkdir()
    return _cli(_predict(tmp, "-o", tmp / "out.nii.gz"))


@case("error")
def refine_output_is_the_image(tmp):
    scan, probs = scan_file(tmp), _labels(tmp, "probs.nii.gz")
    return _cli(["refine", probs, scan, "-o", scan, "-q"], protect=[scan, probs])


@case("error")
def refine_output_is_the_probabilities(tmp):
    scan, probs = scan_file(tmp), _labels(tmp, "probs.nii.gz")
    return _cli(["refine", probs, scan, "-o", probs, "-q"], protect=[scan, probs])


@case("error")
def baseline_output_is_the_input(tmp):
    scan = scan_file(tmp)
    return _cli(["baseline", "otsu", scan, "-o", scan, "-q"], protect=[scan])


@case("error")
def evaluate_json_is_the_ground_truth(tmp):
    pred, gt = _labels(tmp, "pred.nii.gz"), _labels(tmp, "gt.nii.gz")
    return _cli(["evaluate", pred, gt, "--json", gt, "-q"], protect=[pred, gt])


@case("error")
def evaluate_csv_is_the_ground_truths_sidecar(tmp):
    pred, gt = _labels(tmp, "pred.nii.gz"), _labels(tmp, "gt.nii.gz")
    (tmp / "gt.json").write_text(json.dumps({"is_labels": True}))
    return _cli(["evaluate", pred, gt, "--csv", tmp / "gt.json", "-q"],
                protect=[tmp / "gt.json"])


# ---------------------------------------------------------------------- bad values
@case("error")
def predict_threads_negative(tmp):
    return _cli(_predict(tmp, "-o", tmp / "seg.nii.gz", "--threads", "-2"), names=["--threads"])


@case("error")
def predict_corrupted_gzip(tmp):
    scan = scan_file(tmp)
    raw = bytearray(scan.read_bytes())
    raw[int(len(raw) * 0.3)] ^= 0x10
    scan.write_bytes(bytes(raw))
    return _cli(_predict(tmp, "-o", tmp / "seg.nii.gz", scan=scan), names=[scan.name],
                check=lambda: False)


@case("error")
def predict_4d_without_split(tmp):
    p = tmp / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((30, 27, 5, 2), np.float32), np.eye(4)), str(p))
    return _cli(_predict(tmp, "-o", tmp / "seg.nii.gz", scan=p), names=["--split-4d"])


@case("correct")
def predict_4d_with_split_4d(tmp):
    p = tmp / "four.nii.gz"
    data = np.stack([ct_like((30, 27, 5)).astype(np.float32)] * 2, -1)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(p))
    out = tmp / "seg.nii.gz"
    return _cli(_predict(tmp, "-o", out, "--split-4d", "1", scan=p),
                check=lambda: nib.load(str(out)).shape == (30, 27, 5))


@case("correct")
def predict_series_uid_picks_the_series(tmp):
    dicom_series(tmp / "d" / "a", n=4, rows=32, cols=32, uid="1.2.3.9")
    dicom_series(tmp / "d" / "b", n=6, rows=32, cols=32, uid="1.2.3.10")
    out = tmp / "seg.nii.gz"
    return _cli(_predict(tmp, "-o", out, "--series-uid", "1.2.3.9", scan=tmp / "d"),
                check=lambda: nib.load(str(out)).shape[2] == 4)


@case("correct")
def predict_outputs_keep_the_umask(tmp):
    out, probs = tmp / "seg.nii.gz", tmp / "prob.nii.gz"
    old = os.umask(0o022)
    try:
        return _cli(_predict(tmp, "-o", out, "--probabilities", probs), check=lambda: all(
            (p.stat().st_mode & 0o777) == 0o644
            for p in (out, probs, tmp / "seg.json", tmp / "prob.json")))
    finally:
        os.umask(old)


@case("error")
def refine_probabilities_40mm_off_the_image(tmp):
    scan = scan_file(tmp)
    probs = _labels(tmp, "probs.nii.gz", shift=(40.0, 0, 0))
    return _cli(["refine", probs, scan, "-o", tmp / "crf.nii.gz", "-q"], names=["same grid"])


@case("error")
def refine_image_given_as_probabilities(tmp):
    scan = scan_file(tmp)
    return _cli(["refine", scan, scan, "-o", tmp / "crf.nii.gz", "-q"], names=["[0, 1]"])


@case("error")
def evaluate_label_in_neither_file(tmp):
    pred, gt = _labels(tmp, "pred.nii.gz"), _labels(tmp, "gt.nii.gz")
    return _cli(["evaluate", pred, gt, "--labels", "99", "-q"], names=["99"])


@case("error")
def evaluate_ct_image_as_prediction(tmp):
    gt = _labels(tmp, "gt.nii.gz")
    return _cli(["evaluate", scan_file(tmp), gt, "-q"], names=["scan.nii.gz"])


@case("error")
def evaluate_float_labels_1_3(tmp):
    pred = _labels(tmp, "pred.nii.gz")
    gt = _labels(tmp, "gt.nii.gz", data=np.where(ct_like((30, 27, 5)) > 0, 1.3, 0.0)
                 .astype(np.float32))
    return _cli(["evaluate", pred, gt, "-q"], names=["1.3"])


@case("error")
def evaluate_prediction_40mm_off(tmp):
    pred, gt = _labels(tmp, "pred.nii.gz", shift=(40.0, 0, 0)), _labels(tmp, "gt.nii.gz")
    return _cli(["evaluate", pred, gt, "-q"], names=["same grid"])


def _finetune(tmp, labels, *extra):
    return ["finetune", scan_file(tmp), labels, "--base", tiny_model(tmp), "--epochs", "1",
            "--steps-per-epoch", "1", "--batch-size", "1", "-q", *extra]


@case("error")
def finetune_threads_negative(tmp):
    return _cli(_finetune(tmp, _labels(tmp, "lab.nii.gz"), "--threads", "-2"),
                names=["--threads"])


@case("error")
def finetune_patch_16384(tmp):
    return _cli(_finetune(tmp, _labels(tmp, "lab.nii.gz"), "--patch-size", "16384", "16384"),
                names=["--patch-size"])


@case("error")
def finetune_labels_40mm_off_the_image(tmp):
    return _cli(_finetune(tmp, _labels(tmp, "lab.nii.gz", shift=(40.0, 0, 0))),
                names=["same grid"])


@case("error")
def finetune_float_labels_1_3(tmp):
    lab = _labels(tmp, "lab.nii.gz", data=np.where(ct_like((30, 27, 5)) > 0, 1.3, 0.0)
                  .astype(np.float32))
    return _cli(_finetune(tmp, lab), names=["1.3"])


@pytest.mark.parametrize("name,expected,fn", CASES, ids=[c[0] for c in CASES])
def test_bad_cli_input(name, expected, fn, tmp_path):
    assert fn(tmp_path) == expected


def test_output_checks_come_before_the_work(tmp_path, monkeypatch):
    """A missing output folder is reported before the scan is read or a model loaded."""
    from napari_attnseg import io as io_pkg

    def boom(*a, **k):
        raise AssertionError("read before the outputs were checked")

    monkeypatch.setattr(io_pkg, "read_volume", boom)
    scan = scan_file(tmp_path)
    assert _cli(["baseline", "otsu", scan, "-o", tmp_path / "no" / "x.nii.gz"]) == "error"
    assert _cli(["evaluate", scan, scan, "--json", tmp_path / "no" / "m.json"]) == "error"


if __name__ == "__main__":  # the table: observed class per case
    import atexit
    import shutil
    import tempfile

    os.environ["ATTNSEG_MODELS"] = tempfile.mkdtemp(prefix="attnseg-models-")  # never the user's
    atexit.register(shutil.rmtree, os.environ["ATTNSEG_MODELS"], True)

    counts: dict[str, int] = {}
    for name, expected, fn in CASES:
        with tempfile.TemporaryDirectory() as d:
            got = fn(Path(d))
        counts[got] = counts.get(got, 0) + 1
        print(f"| {name} | {expected} | {got} |")
    print(counts)
