"""Which model for which image: the one rule behind the Segment widget's preselection and
``attnseg predict`` without ``--model``.

Every model folder declares its ``modality`` (CT, MR, US) and ``anatomy`` ("heart", "fetal
head", "phantom" for a demo model trained on synthetic phantoms; "" when not declared) in its
``config.json``. For an image of known modality (and, where the file says it, anatomy):

1. only models of the image's modality are candidates (a CT model is never chosen for MR);
2. when the image's anatomy is known, a model for another anatomy is not chosen; a model that
   declares no anatomy still is;
3. demo models (anatomy "phantom") are chosen only for phantoms;
4. among the rest: the exact anatomy first, then models without a declared anatomy; shipped
   models before user models, then by name. Each name counts once, as the version the name
   refers to (``ModelRegistry.get``: its active version, e.g. a fine-tune that beat its parent;
   a broken or deleted ``active.json`` is an error, never a fall-back to the latest).

Otherwise nothing is chosen and :attr:`ModelChoice.message` says why in plain words ("no MR
model installed", "image modality unknown", ...). :func:`mismatch` describes a model chosen by
hand that does not fit ("model is CT, image looks MR"). Only the small ``config.json`` files
are read (cached by modification time); nothing here imports torch or Qt.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..io.modality import normalize_anatomy, normalize_modality

if TYPE_CHECKING:
    from .registry import ModelEntry, ModelRegistry

logger = logging.getLogger(__name__)

__all__ = ["DEMO_ANATOMY", "NO_MODEL_TEXT", "ModelChoice", "ModelInfo", "choose_model",
           "installed_models", "mismatch", "model_info"]

#: The anatomy of demo models trained on the package's synthetic phantoms.
DEMO_ANATOMY = "phantom"
NO_MODEL_TEXT = "no model installed: train one with `attnseg train` or pick a folder"


@dataclass(frozen=True)
class ModelInfo:
    """What a model folder declares: modality, anatomy (normalized), label names."""

    path: Path
    name: str
    version: str
    shipped: bool
    modality: str
    anatomy: str
    label_names: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def demo(self) -> bool:
        """A demo model (trained on synthetic phantoms: not for real scans)."""
        return self.anatomy == DEMO_ANATOMY

    def describe(self) -> str:
        """"CT phantom demo", "US, fetal head", "MR", "modality not declared"."""
        if not self.modality:
            return "modality not declared"
        if self.demo:
            return f"{self.modality} phantom demo"
        return self.modality + (f", {self.anatomy}" if self.anatomy else "")


@dataclass(frozen=True)
class ModelChoice:
    """The outcome of :func:`choose_model`: the chosen model (or ``None``) and why.

    ``status``: "match" (a model fits), "no-models" (none installed), "unknown-modality",
    "no-modality" (no model for that modality), "anatomy" (models of that modality, none for
    that anatomy), "demo-only" (only a phantom demo model for a real scan).
    """

    info: ModelInfo | None
    status: str
    message: str

    @property
    def path(self) -> Path | None:
        return None if self.info is None else self.info.path


_cache: dict[str, tuple[int, ModelInfo]] = {}


def model_info(path: str | Path, *, name: str | None = None, version: str | None = None,
               shipped: bool = False) -> ModelInfo:
    """The declared modality/anatomy of a model folder (its config.json; an unreadable one
    declares nothing). Cached by the file's modification time."""
    path = Path(path)
    cfg = path / "config.json"
    try:
        stamp = cfg.stat().st_mtime_ns
    except OSError:
        stamp = -1
    key = f"{path}|{name}|{version}|{shipped}"
    hit = _cache.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    config: dict = {}
    try:
        value = json.loads(cfg.read_text(encoding="utf-8"))
        config = value if isinstance(value, dict) else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        logger.debug("model folder %s: unreadable config.json (%s)", path, exc)
    labels = config.get("label_names")
    names = tuple(str(v) for _, v in sorted(labels.items(), key=lambda kv: str(kv[0]))) \
        if isinstance(labels, dict) else ()
    info = ModelInfo(path=path, name=name or str(config.get("name") or path.name),
                     version=version or str(config.get("version") or ""), shipped=shipped,
                     modality=normalize_modality(config.get("modality")),
                     anatomy=normalize_anatomy(config.get("anatomy")), label_names=names)
    _cache[key] = (stamp, info)
    return info


def _info(entry: ModelEntry) -> ModelInfo:
    return model_info(entry.path, name=entry.name, version=entry.version, shipped=entry.shipped)


def installed_models(registry: ModelRegistry | None = None) -> list[ModelInfo]:
    """One :class:`ModelInfo` per model name in the registry (shipped and user models): the
    version the name refers to (:meth:`ModelRegistry.get`: its active version, else its only or
    latest shipped one; a broken or missing ``active.json`` raises ``ModelError`` saying how to
    fix it, the same rule as everywhere else)."""
    from .registry import ModelRegistry

    reg = registry if registry is not None else ModelRegistry()
    by_name: dict[str, list[ModelEntry]] = {}
    for e in reg.list_models():
        by_name.setdefault(e.name, []).append(e)
    out = []
    for name in by_name:
        out.append(_info(reg.get(name)))
    return out


def _listing(models: list[ModelInfo]) -> str:
    return "; ".join(f"{m.name} ({m.describe()})" for m in models) or "none"


def _anatomy_score(model: ModelInfo, anatomy: str) -> int:
    """3 exact, 2 undeclared on either side, 0 excluded."""
    if anatomy == DEMO_ANATOMY:  # phantoms: the demo first, then any model of the modality
        return 3 if model.demo else 2
    if model.demo:
        return 0
    if not anatomy or not model.anatomy:
        return 2
    return 3 if model.anatomy == anatomy else 0


def choose_model(modality: str | None, anatomy: str | None = None, *,
                 registry: ModelRegistry | None = None,
                 models: list[ModelInfo] | None = None) -> ModelChoice:
    """The model for an image of ``modality`` ("CT", "MR", "US"; "" / None = unknown) and
    ``anatomy`` ("" = unknown); see the module docstring for the rule. ``models`` defaults to
    :func:`installed_models` of ``registry`` (default: the user's registry)."""
    mod = normalize_modality(modality)
    anat = normalize_anatomy(anatomy)
    models = installed_models(registry) if models is None else list(models)
    if not models:
        return ModelChoice(None, "no-models", NO_MODEL_TEXT)
    if not mod:
        return ModelChoice(None, "unknown-modality",
                           "image modality unknown: set it (CT, MR or US) to choose a model; "
                           f"installed: {_listing(models)}")
    same = [m for m in models if m.modality == mod]
    if not same:
        return ModelChoice(None, "no-modality",
                           f"no {mod} model installed (installed: {_listing(models)}); train "
                           "one with `attnseg train` or pick a folder")
    scored = [(m, _anatomy_score(m, anat)) for m in same]
    scored = [(m, s) for m, s in scored if s > 0]
    if not scored:
        if all(m.demo for m in same):
            demos = ", ".join(m.name for m in same)
            return ModelChoice(None, "demo-only",
                               f"no {mod} model for real scans installed: {demos} is a demo "
                               "trained on synthetic phantoms (choose it to try it anyway)")
        return ModelChoice(None, "anatomy",
                           f"no {mod} model for the {anat} installed ({mod} models: "
                           f"{_listing(same)}); choose one to try it anyway")
    scored.sort(key=lambda ms: (-ms[1], not ms[0].shipped, ms[0].name))
    best = scored[0][0]
    return ModelChoice(best, "match", f"{best.ref} chosen ({best.describe()})")


def mismatch(model: ModelInfo, modality: str | None, anatomy: str | None = None) -> str:
    """"" when ``model`` fits an image of ``modality``/``anatomy``; else the problem in words:
    "model is CT, image looks MR", "image modality unknown (model is CT)", "model is for the
    heart, image looks like the brain", "ct-phantom-2d is a demo model for synthetic phantoms"."""
    mod = normalize_modality(modality)
    anat = normalize_anatomy(anatomy)
    if not model.modality:
        return f"{model.name} does not declare its modality"
    if not mod:
        return f"image modality unknown (model is {model.modality})"
    if model.modality != mod:
        return f"model is {model.modality}, image looks {mod}"
    if model.demo and anat != DEMO_ANATOMY:
        return (f"{model.name} is a demo model for synthetic phantoms: it will not work on "
                "real scans")
    if anat and model.anatomy and anat != DEMO_ANATOMY and model.anatomy != anat:
        return f"model is for the {model.anatomy}, image looks like the {anat}"
    return ""
