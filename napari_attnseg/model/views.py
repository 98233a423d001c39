"""Further views of a 2D model: networks that cut the same volume along another axis (a
coronal model beside an axial one), whose class probabilities are averaged with the model's.

A view is a complete model folder inside the model's own folder, named in ``config.json``::

    "views": [{"folder": "coronal", "axes": [2, 0, 1], "weight": 0.5}]

``axes`` permutes the model's slice frame (the volume as the model cuts it: its slice, row and
column axes after :func:`~napari_attnseg.inference.preprocess.slice_reorientation`) into the
view's: ``[2, 0, 1]`` makes the model's columns the view's slices, its slices the view's rows. A
view declares no orientation and no views of its own; it has the model's labels. ``weight`` is
the view's share of the average (the model keeps ``1 - sum(weights)``). The whole-volume
prediction averages the views; the current-slice preview runs the model alone (one slice
cannot be cut coronally).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import ModelError

_FOLDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
KEYS = ("folder", "axes", "weight")


def views_problem(views: Any, dims: int) -> str | None:
    """What is wrong with a ``views`` entry (``None``: nothing)."""
    if not isinstance(views, (list, tuple)):
        return f"must be a list of views, got {views!r}"
    if views and dims != 2:
        return f"apply to 2D models only (this one is {dims}D)"
    total = 0.0
    for i, v in enumerate(views):
        if not isinstance(v, dict) or set(v) != set(KEYS):
            return f"[{i}] must be an object with exactly {', '.join(KEYS)}, got {v!r}"
        folder = v["folder"]
        if not isinstance(folder, str) or not _FOLDER.match(folder) or folder in (".", ".."):
            return f"[{i}].folder must be a plain folder name inside the model folder, got {folder!r}"
        axes = v["axes"]
        if not isinstance(axes, (list, tuple)) or sorted(axes) != [0, 1, 2] \
                or any(isinstance(a, bool) for a in axes):
            return f"[{i}].axes must be a permutation of [0, 1, 2], got {axes!r}"
        w = v["weight"]
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 < float(w) < 1.0:
            return f"[{i}].weight must be a number in (0, 1), got {w!r}"
        total += float(w)
    if total >= 1.0:
        return f"weights sum to {total:g}; the model itself must keep a share (sum below 1)"
    return None


def normalized_views(views: Any) -> tuple[dict, ...]:
    return tuple({"folder": str(v["folder"]), "axes": [int(a) for a in v["axes"]], "weight": float(v["weight"])}
                 for v in views)


def load_views(folder: Path, spec: Any, device: Any, load: Any) -> tuple[tuple[Any, tuple[int, ...], float], ...]:
    """``(LoadedModel, axes, weight)`` for each of ``spec.views`` (``load``: :func:`load_model`).
    A view that is missing, carries views or an orientation, or labels other classes is refused."""
    out = []
    for v in spec.views:
        sub = folder / v["folder"]
        if not (sub / "config.json").is_file():
            raise ModelError(f"{folder}: the view '{v['folder']}' named in config.json is missing "
                             f"({sub} holds no config.json); the model folder is incomplete")
        view = load(sub, device)
        vs = view.spec
        problem = None
        if vs.arch.spatial_dims != 2:
            problem = f"is a {vs.arch.spatial_dims}D model (views are 2D)"
        elif vs.views:
            problem = "has views of its own"
        elif vs.orientation:
            problem = f"declares an orientation ({vs.orientation}); its axes are the model's, permuted"
        elif vs.label_names != spec.label_names:
            problem = f"labels {vs.label_names}, not the model's {spec.label_names}"
        if problem:
            raise ModelError(f"{folder}: the view {sub} {problem}")
        out.append((view, tuple(v["axes"]), float(v["weight"])))
    return tuple(out)


def attach_views(folder: str | Path, views: list[tuple[str | Path, tuple[int, ...], float]]) -> Path:
    """Copy trained model folders into ``folder`` as its views and name them in its
    ``config.json`` (hash renewed): ``views`` = ``[(view_folder, axes, weight), ...]``. Written in a
    copy beside ``folder`` and renamed into place once it loads; a folder with views is refused."""
    import json
    import os
    import shutil

    from .checkpoint import CONFIG_FILE, load_model
    from .config_check import CONFIG_HASH_KEY, config_hash

    folder = Path(folder)
    config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    if config.get("views"):
        raise ModelError(f"{folder} has views already; attach them to a copy of the model without views")
    entries = []
    tmp = folder.with_name(f".{folder.name}.views.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(folder, tmp)
    try:
        for src, axes, weight in views:
            src = Path(src)
            name = src.name if _FOLDER.match(src.name) else f"view{len(entries) + 1}"
            shutil.copytree(src, tmp / name)
            entries.append({"folder": name, "axes": [int(a) for a in axes], "weight": float(weight)})
        config["views"] = entries
        config.pop(CONFIG_HASH_KEY, None)
        config[CONFIG_HASH_KEY] = config_hash(config)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
        load_model(tmp)  # never leave a folder that does not load
        old = folder.with_name(f".{folder.name}.old")
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
