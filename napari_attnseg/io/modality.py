"""What kind of scan is this? The modality (CT, MR, US) and, where known, the anatomy, taken
from what the file says, in this order (the first that speaks wins):

1. the reader's own finding (the DICOM ``Modality`` tag; an HC18-style CSV for 2D images);
2. a JSON sidecar beside the file (``scan.json`` for ``scan.nii.gz``): BIDS (``Modality``,
   ``BodyPart``), napari-attnseg's own sidecars (``geometry.modality``), or plain ``modality`` /
   ``anatomy`` keys;
3. a Decathlon / nnU-Net ``dataset.json`` of the folder above ``imagesTr/`` (``modality``);
4. the file's own description: the NIfTI ``descrip`` field, NRRD header fields (``content``,
   ``modality``, key/value pairs), the DICOM series description;
5. the intensities: a CT in Hounsfield units (air near -1000 HU, a signed image whose values
   stay within the HU range; see :func:`looks_like_ct`);
6. the file name (``t1``, ``t2star``, ``flair``, ``dwi`` -> MR; ``ct`` -> CT; ``us``,
   ``ultrasound``, ``echo`` -> US), the weakest hint.

Nothing else is guessed: a grey PNG with no CSV or sidecar is ``""`` (unknown), not CT. Every
answer says where it came from (:attr:`ModalityGuess.source`), so the user can judge it.
Pure Python + numpy; no Qt, no torch. The reader records the result in ``Volume.modality`` and
``Volume.header["modality_source"]`` / ``header["anatomy"]``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["ModalityGuess", "anatomy_from_text", "ct_intensity_problem", "detect_modality", "looks_like_ct",
           "modality_from_text", "normalize_anatomy", "normalize_modality"]

#: Words that name a modality (lower case; matched as whole words of a description).
_MODALITY_WORDS = {
    "CT": ("ct", "cta", "cect", "ncct", "hu", "hounsfield", "computed tomography", "ctscan"),
    "MR": ("mr", "mri", "mrt", "t1", "t1w", "t2", "t2w", "t2star", "t2*", "flair", "dwi", "adc",
           "bold", "swi", "pdw", "spir", "mprage", "magnetic resonance"),
    "US": ("us", "ultrasound", "ultrasonography", "sonography", "echocardiography", "bmode",
           "doppler"),
}
#: The same for file names: only distinctive tokens (``us`` or ``pd`` alone in a name is too weak).
_NAME_WORDS = {
    "CT": ("ct", "cta", "cect"),
    "MR": ("mr", "mri", "t1", "t1w", "t2", "t2w", "t2star", "flair", "dwi", "adc", "bold", "swi",
           "mprage"),
    "US": ("ultrasound", "echocardiography", "sonography", "bmode"),
}
#: Anatomy names and the words that point at them (lower case).
_ANATOMY_WORDS = {
    "phantom": ("phantom", "phantoms", "synthetic"),
    "fetal head": ("fetal head", "fetal", "hc18", "head circumference"),
    "heart": ("heart", "cardiac", "acdc", "ventricle", "myocardium"),
    "brain": ("brain", "head mri", "tumour", "tumor", "glioma", "neuro"),
    "spinal cord": ("spinal cord", "spinalcord", "spine", "cord"),
    "abdomen": ("abdomen", "abdominal", "liver", "spleen", "kidney", "chaos", "pancreas"),
    "head and neck": ("head and neck", "head-and-neck", "parotid", "openkbp", "larynx"),
    "chest": ("chest", "lung", "thorax", "thoracic"),
}
_MODALITY_ALIASES = {"CT": "CT", "MR": "MR", "MRI": "MR", "US": "US", "ULTRASOUND": "US",
                     "CTA": "CT", "MRA": "MR", "T1": "MR", "T2": "MR", "FLAIR": "MR"}


@dataclass(frozen=True)
class ModalityGuess:
    """A modality ("CT", "MR", "US" or "" for unknown), the anatomy ("" when unknown) and where
    each came from (a short phrase for the user, e.g. "DICOM Modality tag", "HU range")."""

    modality: str = ""
    anatomy: str = ""
    source: str = ""
    anatomy_source: str = ""

    @property
    def known(self) -> bool:
        return bool(self.modality)

    def describe(self) -> str:
        """One phrase: "MR (from the file name)", "unknown"."""
        if not self.modality:
            return "unknown"
        text = self.modality + (f" (from {self.source})" if self.source else "")
        if self.anatomy:
            text += f", {self.anatomy}"
        return text


def normalize_modality(value: Any) -> str:
    """"CT" / "MR" / "US" from a spelling like "mri", "MR", "Ultrasound"; "" otherwise."""
    text = str(value or "").strip().upper()
    return _MODALITY_ALIASES.get(text, "")


def normalize_anatomy(value: Any) -> str:
    """The package's anatomy name for a free-text value ("Cardiac" -> "heart"); the lower-case
    text itself when it names nothing known; "" for empty."""
    text = " ".join(str(value or "").strip().lower().replace("_", " ").split())
    if not text:
        return ""
    if text in _ANATOMY_WORDS:
        return text
    found = anatomy_from_text(text)
    return found or text


def _words(text: str) -> str:
    """Lower case, separators as spaces, padded: ``" t2star image "`` (for whole-word search)."""
    return " " + re.sub(r"[\s_\-.,;:/()\[\]]+", " ", text.lower()) + " "


def _has_word(padded: str, word: str) -> bool:
    return f" {word} " in padded


def modality_from_text(text: str, *, names: bool = False) -> str:
    """The modality a description names ("" when none or several); ``names`` uses the stricter
    file-name vocabulary."""
    padded = _words(text or "")
    if "t2*" in (text or "").lower():
        padded += " t2star "
    table = _NAME_WORDS if names else _MODALITY_WORDS
    hits = {m for m, words in table.items() if any(_has_word(padded, w) for w in words)}
    return hits.pop() if len(hits) == 1 else ""


def anatomy_from_text(text: str) -> str:
    """The anatomy a description names ("" when none or several)."""
    padded = _words(text or "")
    hits = [a for a, words in _ANATOMY_WORDS.items() if any(_has_word(padded, w) for w in words)]
    if "phantom" in hits:  # "CT phantom of the abdomen" is a phantom
        return "phantom"
    return hits[0] if len(hits) == 1 else ""


def _finite_sample(arr: np.ndarray) -> np.ndarray:
    """About 10^6 evenly strided values of ``arr`` as float64, NaN and infinity dropped."""
    flat = arr.reshape(-1)
    sample = flat[::max(1, flat.size // 1_000_000)].astype(np.float64, copy=False)
    return sample[np.isfinite(sample)]


def looks_like_ct(data: np.ndarray) -> bool:
    """True for intensities in Hounsfield units: a signed image (negative values) whose air sits
    near -1000 HU (at least 0.1% of the voxels in [-1100, -900], nothing much below -1100 except
    a padding value at the minimum) and at least 95% of the voxels within [-1100, 3100].
    MR (non-negative, or z-scored within a few units), ultrasound (0-255) and phase images
    (spread evenly over +-4096) fail. Large arrays are subsampled (about 10^6 values)."""
    arr = np.asarray(data)
    if arr.size == 0 or arr.dtype == bool or not (np.issubdtype(arr.dtype, np.signedinteger)
                                                  or np.issubdtype(arr.dtype, np.floating)):
        return False
    sample = _finite_sample(arr)
    if sample.size == 0:
        return False
    lo = float(sample.min())
    if lo > -900 or lo < -32768:
        return False
    # a constant padding value outside the body (-1024, -2000, -3024) is allowed at the minimum
    body = sample[sample > lo] if np.count_nonzero(sample == lo) > 0.01 * sample.size else sample
    if body.size == 0:
        return False
    air = np.count_nonzero((body >= -1100) & (body <= -900)) / body.size
    if lo >= -1100:  # no padding below air: the minimum itself is air
        air = max(air, np.count_nonzero(sample <= -900) / sample.size)
    in_range = np.count_nonzero((body >= -1100) & (body <= 3100)) / body.size
    return bool(air >= 0.001 and in_range >= 0.95)


def ct_intensity_problem(data: np.ndarray) -> str:
    """"" when ``data`` can be Hounsfield units; else why it cannot, in words, for a model that
    windows HU (its CT preset clips to -1000..1000): a normalised image (all values within a
    span of 50: [0, 1], [-1, 1]) maps to one grey, and stored values without the DICOM rescale
    intercept (no negative values, tissue near +1000 instead of 0) put air at soft tissue's
    level. Either gives wrong labels without an error, so the callers warn. Subsampled like
    :func:`looks_like_ct`."""
    if looks_like_ct(data):
        return ""
    sample = _finite_sample(np.asarray(data))
    if sample.size == 0:
        return ""
    lo, hi = float(sample.min()), float(sample.max())
    if hi - lo < 50:
        return (f"its values span only {lo:.4g} to {hi:.4g}: a normalised image, not Hounsfield "
                "units (the CT model windows -1000 to 1000 HU); open the original CT")
    body = sample[sample > lo + 200]
    if lo >= 0 and body.size and float(np.median(body)) > 700:
        return (f"it has no negative values and its tissue sits near {float(np.median(body)):.0f}: "
                "stored values without the rescale intercept (usually -1024)? The CT model "
                "expects HU (air -1000, soft tissue 0 to 100)")
    return ""


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".dcm", ".png", ".jpg", ".jpeg", ".tif",
                   ".tiff", ".bmp", ".ima", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _read_json(path: Path) -> dict | None:
    try:
        if not path.is_file() or path.stat().st_size > 5_000_000:
            return None
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.debug("ignoring unreadable sidecar %s: %s", path, exc)
        return None
    return value if isinstance(value, dict) else None


def _from_sidecar(path: Path) -> ModalityGuess:
    """``<stem>.json`` beside the file: BIDS, napari-attnseg sidecars, plain keys."""
    side = path.with_name(_stem(path) + ".json")
    data = _read_json(side)
    if data is None:
        return ModalityGuess()
    cands = [data.get("modality"), data.get("Modality")]
    for key in ("geometry", "source_header"):
        sub = data.get(key)
        if isinstance(sub, dict):
            cands.append(sub.get("modality"))
    modality = next((normalize_modality(c) for c in cands if normalize_modality(c)), "")
    anatomy = ""
    for key in ("anatomy", "Anatomy", "BodyPart", "BodyPartExamined", "body_part"):
        if data.get(key):
            anatomy = normalize_anatomy(data[key])
            break
    if not modality:  # a BIDS sidecar for MR has MagneticFieldStrength, EchoTime, ...
        if any(k in data for k in ("MagneticFieldStrength", "EchoTime", "RepetitionTime")):
            modality = "MR"
    where = f"the sidecar {side.name}"
    return ModalityGuess(modality, anatomy, where if modality else "", where if anatomy else "")


def _from_dataset_json(path: Path) -> ModalityGuess:
    """A Decathlon / nnU-Net ``dataset.json`` one folder up from ``imagesTr``/``imagesTs``."""
    folder = path.parent
    if not folder.name.lower().startswith(("images", "labels")):
        return ModalityGuess()
    data = _read_json(folder.parent / "dataset.json")
    if data is None:
        return ModalityGuess()
    chans = data.get("channel_names") or data.get("modality") or {}
    text = " ".join(str(v) for v in chans.values()) if isinstance(chans, dict) else str(chans)
    modality = normalize_modality(text) or modality_from_text(text)
    desc = " ".join(str(data.get(k, "")) for k in ("name", "description"))
    labels = data.get("labels") if isinstance(data.get("labels"), dict) else {}
    anatomy = anatomy_from_text(desc) or anatomy_from_text(" ".join(map(str, labels.values())))
    where = f"{folder.parent.name}/dataset.json"
    return ModalityGuess(modality, anatomy, where if modality else "", where if anatomy else "")


def _nrrd_text(path: Path) -> str:
    try:
        import nrrd

        hdr = nrrd.read_header(str(path))
    except Exception as exc:  # pynrrd raises several types; no description then
        log.debug("no NRRD header text from %s: %s", path, exc)
        return ""
    keep = []
    for key, value in hdr.items():
        if key.lower() in ("content", "modality", "description", "seriesdescription") or \
                key.lower().startswith(("modality", "dicom", "content")):
            keep.append(f"{key} {value}")
    return " ".join(keep)


def _description(volume: Any, path: Path | None) -> tuple[str, str]:
    """(text, what it is) of the file's own description."""
    header = dict(getattr(volume, "header", {}) or {})
    fmt = header.get("format", "")
    if fmt == "nifti" and header.get("descrip"):
        return str(header["descrip"]), "the NIfTI description"
    if fmt == "dicom" and header.get("series_description"):
        return str(header["series_description"]), "the DICOM series description"
    if fmt == "nrrd" and path is not None:
        text = _nrrd_text(path)
        if text:
            return text, "the NRRD header"
    return "", ""


def detect_modality(volume: Any = None, path: str | Path | None = None, *,
                    use_data: bool = True) -> ModalityGuess:
    """The modality and anatomy of ``volume`` (a :class:`~napari_attnseg.volume.Volume`, or
    ``None`` to look at the path alone) read from ``path``; see the module docstring for the
    order. ``use_data=False`` skips the intensity test (cheap: headers and names only)."""
    p = Path(path) if path is not None else (
        Path(volume.source) if volume is not None and getattr(volume, "source", None) else None)
    header = dict(getattr(volume, "header", {}) or {})
    found = ModalityGuess()
    own = normalize_modality(getattr(volume, "modality", "")) if volume is not None else ""
    if own:
        found = ModalityGuess(own, normalize_anatomy(header.get("anatomy", "")),
                              str(header.get("modality_source") or
                                  ("the DICOM Modality tag" if header.get("format") == "dicom"
                                   else "the reader")),
                              str(header.get("anatomy_source", "")))
    steps = []
    if p is not None:
        steps += [lambda: _from_sidecar(p), lambda: _from_dataset_json(p)]

    def from_description() -> ModalityGuess:
        text, where = _description(volume, p)
        if not text:
            return ModalityGuess()
        m, a = modality_from_text(text), anatomy_from_text(text)
        return ModalityGuess(m, a, where if m else "", where if a else "")

    steps.append(from_description)
    if use_data and volume is not None and not getattr(volume, "is_labels", False):
        steps.append(lambda: ModalityGuess("CT", "", "the HU range")
                     if looks_like_ct(volume.data) else ModalityGuess())
    if p is not None:
        def from_name() -> ModalityGuess:
            m, where = modality_from_text(_stem(p), names=True), "the file name"
            if not m:
                m, where = modality_from_text(p.parent.name, names=True), "the folder name"
            a = anatomy_from_text(_stem(p)) or anatomy_from_text(
                " ".join(p.parent.parts[-2:]))
            return ModalityGuess(m, a, where if m else "", "the file name" if a else "")
        steps.append(from_name)
    for step in steps:
        if found.modality and found.anatomy:
            break
        try:
            g = step()
        except (OSError, ValueError) as exc:  # a hint that cannot be read is no hint
            log.debug("modality hint skipped: %s", exc)
            continue
        found = ModalityGuess(found.modality or g.modality, found.anatomy or g.anatomy,
                              found.source or g.source, found.anatomy_source or g.anatomy_source)
    return found
