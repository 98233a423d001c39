"""Dense-CRF modality defaults on held-out cases: per-class Dice of the raw network vs the CRF
with the previous defaults vs the CRF with the current ``default_params`` (protect on), and the
512² preview time of our wrapper vs a direct pydensecrf call (median of ``--repeat``).

Cases: the CT sample case (``ct_phantom()``, seed 0, never used for tuning) with the shipped
``ct-phantom-2d`` model, and the same case with a *simulated better network* (softmax of a blurred
one-hot of the truth plus smooth noise, lesion logit lowered: lesion Dice ~0.66 like a better
model); HC18 validation images with the shipped ``hc18-ultrasound-2d`` model when
/work/shared/data/hc18 is present (downsampled ×4 as in training).

    python benchmarks/bench_crf_defaults.py [--repeat 5] [--hc18 003_HC 022_HC]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_attnseg.crf import CRFParams, default_params, refine
from napari_attnseg.crf import dense_crf as dc
from napari_attnseg.metrics import overlap_metrics

ROOT = Path(__file__).resolve().parents[1]
HC18 = Path("/work/shared/data/hc18")
#: The defaults before this change (for the side-by-side figures).
OLD = {
    "CT": CRFParams(sxy_gaussian_mm=1.0, gaussian_weight=2.0, sxy_bilateral_mm=5.0,
                    srgb_bilateral=15.0, bilateral_weight=3.0, protect=False),
    "US": CRFParams(sxy_gaussian_mm=1.0, gaussian_weight=3.0, sxy_bilateral_mm=4.0,
                    srgb_bilateral=30.0, bilateral_weight=3.0, mode="2d", protect=False),
}


def simulated_probs(labels, spacing, seed=0, n_classes=3, gain=4.0, noise=1.2, blur_mm=1.5,
                    corr_mm=3.0, weak=(0.0, 0.0, 1.2)):
    """A 'better network': softmax of gain × blurred one-hot + smooth unit noise − weak[k]."""
    rng = np.random.default_rng(seed)
    lab = np.asarray(labels)
    logits = []
    for k in range(n_classes):
        oh = ndi.gaussian_filter((lab == k).astype(np.float32), [blur_mm / s for s in spacing])
        nz = ndi.gaussian_filter(rng.normal(size=lab.shape).astype(np.float32),
                                 [corr_mm / s for s in spacing])
        nz /= nz.std() + 1e-8
        logits.append(gain * oh + noise * nz - weak[k])
    lg = np.stack(logits)
    lg -= lg.max(0)
    e = np.exp(lg)
    return (e / e.sum(0)).astype(np.float32)


def dices(labels, gt, classes):
    return [overlap_metrics(labels, gt, k)["dice"] for k in classes]


def row(name, labels, gt, classes, extra=""):
    d = dices(labels, gt, classes)
    print(f"  {name:<22}" + "".join(f"{v:>9.3f}" for v in d) + f"   {extra}")


def compare(title, probs, image, spacing, gt, classes, modality):
    print(f"{title}\n  {'':<22}" + "".join(f"{'Dice ' + str(k):>9}" for k in classes))
    row("network (argmax)", probs.argmax(0), gt, classes)
    old = refine(probs, image, spacing, replace(OLD[modality], workers=2))
    row("CRF old defaults", old.labels, gt, classes, f"{old.params.mode}, {old.seconds:.2f} s")
    new_np = refine(probs, image, spacing, replace(default_params(modality), protect=False))
    row("CRF new, protect off", new_np.labels, gt, classes, f"{new_np.params.mode}")
    new = refine(probs, image, spacing, default_params(modality))
    row("CRF new defaults", new.labels, gt, classes,
        f"{new.params.mode}, {new.seconds:.2f} s, protected {list(new.protected)}")


def ct(args):
    from napari_attnseg.inference.predictor import PredictConfig, predict
    from napari_attnseg.model import load_model
    from napari_attnseg.sample import ct_phantom

    img, lab = ct_phantom()
    model = load_model(ROOT / "napari_attnseg/models/ct-phantom-2d/1")
    probs = predict(model, img, PredictConfig()).probabilities
    compare("CT sample case, shipped ct-phantom-2d model", probs, img.data, img.spacing,
            lab.data, (1, 2), "CT")
    sim = simulated_probs(lab.data, img.spacing, seed=5)
    compare("CT sample case, simulated better network", sim, img.data, img.spacing, lab.data,
            (1, 2), "CT")


def hc18(names):
    from skimage.io import imread

    from napari_attnseg.inference.predictor import PredictConfig, predict
    from napari_attnseg.model import load_model
    from napari_attnseg.volume import Volume

    if not HC18.is_dir():
        print("HC18: /work/shared/data/hc18 absent, skipped")
        return
    model = load_model(ROOT / "napari_attnseg/models/hc18-ultrasound-2d/1")
    sizes = dict(line.split(",")[:2] for line in
                 (HC18 / "pixel_size_and_hc.csv").read_text().splitlines()[1:])
    for name in names:
        im = imread(HC18 / "images" / f"{name}.png").astype(np.float32)
        if im.ndim == 3:
            im = im[..., 0]
        mk = imread(HC18 / "masks" / f"{name}_mask.png") > 0
        f = 4
        h, w = (im.shape[0] // f) * f, (im.shape[1] // f) * f
        im = im[:h, :w].reshape(h // f, f, w // f, f).mean((1, 3))
        mk = mk[:h, :w].reshape(h // f, f, w // f, f).mean((1, 3)) >= 0.5
        sp = float(sizes[f"{name}.png"]) * f
        vol = Volume(im, (sp, sp), modality="US")
        probs = predict(model, vol, PredictConfig()).probabilities
        compare(f"HC18 {name} (validation subject, ×4 down, {sp:.2f} mm px), shipped US model",
                probs, im, (sp, sp), mk.astype(np.uint8), (1,), "US")


def preview(repeat):
    """512² three-class slice: wrapper vs direct pydensecrf (same features, same parameters)."""
    import pydensecrf.densecrf as d

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:512, :512]
    gt = ((yy - 256) ** 2 + (xx - 256) ** 2 < 150 ** 2).astype(int) \
        + ((yy - 256) ** 2 + (xx - 300) ** 2 < 30 ** 2)
    img = (gt * 40 + rng.normal(0, 12, gt.shape)).astype(np.int16)
    lg = np.stack([(gt == k) * 3.0 + rng.normal(0, 1, gt.shape) for k in range(3)])
    probs = np.exp(lg - lg.max(0)).astype(np.float32)
    probs /= probs.sum(0)
    p = replace(default_params("CT"), workers=1)
    sp = (0.8, 0.8)

    def direct():
        crf = d.DenseCRF(512 * 512, 3)
        crf.setUnaryEnergy(dc._unary(probs))
        sd_g = [p.sxy_gaussian_mm / s for s in sp]
        crf.addPairwiseEnergy(dc._position_features((512, 512), sd_g),
                              compat=p.gaussian_weight)
        f = dc._position_features((512, 512), [p.sxy_bilateral_mm / s for s in sp], extra=1)
        f[-1] = dc.normalize_intensity(img).ravel() / p.srgb_bilateral
        crf.addPairwiseEnergy(f, compat=p.bilateral_weight)
        return np.array(crf.inference(p.iterations))

    ours, ref = [], []
    refine(probs, img, sp, p)
    for _ in range(repeat):
        t = time.perf_counter()
        direct()
        ref.append(time.perf_counter() - t)
        t = time.perf_counter()
        refine(probs, img, sp, p)
        ours.append(time.perf_counter() - t)
    a, b = statistics.median(ref), statistics.median(ours)
    print(f"512² preview (3 classes, CT defaults, {p.iterations} it): direct pydensecrf "
          f"{a:.3f} s, ours {b:.3f} s, ratio ours/direct {b / a:.3f} (median of {repeat})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--hc18", nargs="*", default=["003_HC", "022_HC"])
    args = ap.parse_args()
    ct(args)
    hc18(args.hc18)
    preview(args.repeat)


if __name__ == "__main__":
    main()
