"""Radiological (default) or neurological display of scans, with orientation letters.

The data and the layer transforms stay what the file says (world = RAS millimetres, napari
axes S, A, R); only napari's camera changes (``viewer.camera.orientation``), so writers still
round-trip exactly. Conventions (as 3D Slicer, ITK-SNAP and OHIF show scans):

* **axial** (A and R on screen): anterior up; the patient's right on the screen's LEFT
  (radiological: seen from the feet) or on the right (neurological: seen from above);
* **coronal** (S and R): superior up; right on the left (radiological) or on the right;
* **sagittal** (S and A): superior up, anterior on the left (both conventions);
* **3D**: the same up and left-right as the axial view, with the depth axis chosen so the
  rendering is never a mirror image of the patient.

Letters (R/L/A/P/S/I) at the four edges of the canvas say where each direction points; they
follow the displayed axes (roll or transpose the dims and they update), and in 3D the camera.

The convention is ``$ATTNSEG_DISPLAY`` (``radiological`` or ``neurological``; default
radiological), or :func:`set_display_convention` for a viewer.

**Never a stall.** Setting up the display on the first scan cost ~0.2 s on the GUI thread:
napari computes the camera's directions with scipy's ``Rotation`` (its first import ~0.1 s)
and each of the four letter overlays builds vispy visuals (~20 ms each). So scipy is imported
on a background thread as soon as the display is installed, the camera waits for it (a
``QTimer`` step), and missing letter overlays are created one per event-loop turn; each step
stays far below 100 ms. :func:`settle_display` (used by :func:`current_letters` and
:func:`set_display_convention`) finishes any pending step at once. It applies while the viewer
holds a 3D layer that the plugin placed in patient space (``metadata["attnseg"]["world_axes"]``);
other viewers keep napari's own display. The plugin's reader, sample data, Load widget and demo
call :func:`ensure_display`, so a scan opened any of these ways is shown by the convention.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._options import choose
from ..orientation import WORLD_LETTERS
from .layers import META_KEY

logger = logging.getLogger(__name__)

CONVENTIONS = ("radiological", "neurological")
ENV_VAR = "ATTNSEG_DISPLAY"
#: napari's own orientation (depth, vertical, horizontal).
NAPARI_DEFAULT = ("towards", "down", "right")
#: canvas overlay keys and positions of the four letters.
LETTER_OVERLAYS = {"top": "top_center", "bottom": "bottom_center",
                   "left": "middle_left", "right": "middle_right"}
_KEY = "attnseg_orientation_"
#: napari's camera imports this on first use (in ``view_direction``): imported off the GUI thread.
_CAMERA_MODULE = "scipy.spatial.transform"
#: Pause between two deferred display steps (ms): polling the import, one letter overlay each.
STEP_MS = 15
_camera_import: list[threading.Thread] = []


def default_convention() -> str:
    """``$ATTNSEG_DISPLAY`` (radiological when unset)."""
    return choose(os.environ.get(ENV_VAR, "") or "radiological", CONVENTIONS, ENV_VAR)


# --------------------------------------------------------------------------- pure rules
def orientation_for(displayed: Sequence[int], convention: str) -> tuple[str, ...]:
    """napari camera orientation for the displayed world axes (0 = S, 1 = A, 2 = R), in display
    order: ``(vertical, horizontal)`` for two axes, ``(depth, vertical, horizontal)`` for three."""
    convention = choose(convention, CONVENTIONS, "display convention")
    right_left = "left" if convention == "radiological" else "right"
    vertical_of = {0: "up", 1: "up", 2: "up"}
    horizontal_of = {0: "right", 1: "left", 2: right_left}
    axes = [int(a) for a in displayed]
    if len(axes) == 2:
        return (vertical_of[axes[0]], horizontal_of[axes[1]])
    if len(axes) != 3:
        raise ValueError(f"2 or 3 displayed axes are needed, got {displayed}")
    if axes[0] == 0:  # the default 3D view looks along S: like the axial slice (A up)
        v, h = vertical_of[axes[1]], horizontal_of[axes[2]]
    else:
        v, h = orientation_for(axes[1:], convention)
    for depth in ("towards", "away"):
        if _is_proper(axes, (depth, v, h)):
            return (depth, v, h)
    raise AssertionError("unreachable: one depth sign is always proper")


_SCREEN = {"up": (0, 1, 0), "down": (0, -1, 0), "right": (1, 0, 0), "left": (-1, 0, 0),
           "towards": (0, 0, 1), "away": (0, 0, -1)}


def _is_proper(axes: Sequence[int], orientation: Sequence[str]) -> bool:
    """True when the screen shows the patient unmirrored: the map from world axes (S, A, R) to
    screen (right, up, towards) has the determinant of (S, A, R) in RAS space, which is -1."""
    m = np.zeros((3, 3))
    for axis, direction in zip(axes, orientation):
        m[:, axis] = _SCREEN[str(direction)]
    return bool(np.linalg.det(m) < 0)


def letters_2d(displayed: Sequence[int], orientation: Sequence[str]) -> dict[str, str]:
    """Letters at the canvas edges for a 2D view of world axes ``displayed`` (vertical,
    horizontal) shown with ``orientation`` (vertical, horizontal)."""
    (vpos, vneg), (hpos, hneg) = (WORLD_LETTERS[int(a)] for a in displayed)
    up, right = str(orientation[0]) == "up", str(orientation[1]) == "right"
    return {"top": vpos if up else vneg, "bottom": vneg if up else vpos,
            "right": hpos if right else hneg, "left": hneg if right else hpos}


def _letter(vec: np.ndarray, axes: Sequence[int]) -> str:
    """The letter of the world direction closest to ``vec`` (in displayed-axes coordinates)."""
    k = int(np.argmax(np.abs(vec)))
    pos, neg = WORLD_LETTERS[int(axes[k])]
    return pos if vec[k] > 0 else neg


def letters_3d(displayed: Sequence[int], up: Sequence[float], view: Sequence[float],
               orientation: Sequence[str]) -> dict[str, str]:
    """Letters for a 3D view: ``up`` and ``view`` are the camera's directions in displayed-axes
    coordinates; the screen's right is ``view x up`` when the orientation keeps napari's
    handedness, else its negative (checked from pixels in the tests)."""
    up_v, view_v = np.asarray(up, float), np.asarray(view, float)
    m = np.stack([np.asarray(_SCREEN[str(o)], float) for o in orientation], axis=1)
    right = np.cross(view_v, up_v) * (1.0 if np.linalg.det(m) > 0 else -1.0)
    return {"top": _letter(up_v, displayed), "bottom": _letter(-up_v, displayed),
            "right": _letter(right, displayed), "left": _letter(-right, displayed)}


# --------------------------------------------------------------------------- the viewer
@dataclass
class _State:
    convention: str
    applied: bool = False
    last3d: tuple[int, ...] | None = None  # displayed axes the 3D orientation was set for
    scheduled: bool = False  # a deferred step is queued


def _import_camera_module() -> None:
    try:
        __import__(_CAMERA_MODULE)
    except Exception as exc:  # noqa: BLE001 - napari imports it again (and reports) when used
        logger.debug("could not import %s in the background: %s", _CAMERA_MODULE, exc)


def _camera_ready(wait: bool = False) -> bool:
    """Whether napari's camera maths (scipy's Rotation) is imported; starts importing it on a
    background thread the first time (``wait``: finish the import here)."""
    if _camera_import:
        thread = _camera_import[0]
        if wait:
            thread.join()
        return not thread.is_alive()
    if _CAMERA_MODULE in sys.modules:
        return True
    if wait:
        _import_camera_module()
        return True
    thread = threading.Thread(target=_import_camera_module, name="attnseg-display-import",
                              daemon=True)
    _camera_import.append(thread)
    thread.start()
    return False


def _schedule(viewer: Any, state: _State, delay_ms: int = STEP_MS) -> None:
    """Run :func:`apply_display` again a moment later (once, however often asked)."""
    if state.scheduled:
        return
    try:
        from qtpy.QtCore import QTimer
        from qtpy.QtWidgets import QApplication

        if QApplication.instance() is None:
            raise RuntimeError("no Qt application")
    except Exception:  # noqa: BLE001 - no event loop (a script): do it now
        settle_display(viewer)
        return
    state.scheduled = True

    def step() -> None:
        state.scheduled = False
        try:
            apply_display(viewer)
        except Exception:  # noqa: BLE001 - the display must never break the viewer
            logger.debug("deferred display step failed", exc_info=True)

    QTimer.singleShot(delay_ms, step)


def _anatomical_axes(viewer: Any) -> list[int] | None:
    """World axes (0 = S, 1 = A, 2 = R) of the viewer's dims, when it holds a 3D layer the
    plugin placed in patient space; None otherwise."""
    ndim = int(viewer.dims.ndim)
    if ndim < 3:
        return None
    for layer in viewer.layers:
        meta = (getattr(layer, "metadata", None) or {}).get(META_KEY) or {}
        if meta.get("world_axes") and layer.ndim == 3:
            return [i - (ndim - 3) for i in range(ndim)]  # napari aligns trailing axes
    return None


def _set_letters(viewer: Any, letters: dict[str, str] | None,
                 create: int | None = None) -> bool:
    """Show ``letters`` (None: hide them). At most ``create`` missing overlays are made now
    (None: all); returns False when some are still missing."""
    from napari.components.overlays import TextOverlay

    overlays = viewer.canvas.overlays
    complete = True
    for edge, position in LETTER_OVERLAYS.items():
        key = _KEY + edge
        if key not in overlays:
            if letters is None:
                continue
            if create is not None:
                if create <= 0:
                    complete = False
                    continue
                create -= 1
            overlays[key] = TextOverlay(position=position, font_size=14, color="yellow",
                                        visible=False)
        overlay = overlays[key]
        text = "" if letters is None else letters[edge]
        if overlay.text != text:
            overlay.text = text
        if overlay.visible != bool(text):
            overlay.visible = bool(text)
    return complete


def current_letters(viewer: Any) -> dict[str, str]:
    """The letters shown at the canvas edges ({} when none), pending steps finished first."""
    settle_display(viewer)
    out = {}
    overlays = viewer.canvas.overlays
    for edge in LETTER_OVERLAYS:
        overlay = overlays[_KEY + edge] if _KEY + edge in overlays else None
        if overlay is not None and overlay.visible and overlay.text:
            out[edge] = overlay.text
    return out


def _set_orientation(viewer: Any, orientation: Sequence[str]) -> None:
    current = tuple(str(getattr(o, "value", o)) for o in viewer.camera.orientation)
    if current != tuple(orientation):
        viewer.camera.orientation = tuple(orientation)


def apply_display(viewer: Any, *_: Any) -> None:
    """Set the camera orientation and the letters for the current dims (the event handler);
    what would stall the GUI thread is deferred in small steps (see the module docstring)."""
    state: _State | None = getattr(viewer, "_attnseg_display", None)
    if state is not None:
        _apply(viewer, state, create=1)


def settle_display(viewer: Any) -> None:
    """Finish the deferred display steps of ``viewer`` now (the camera import, every letter
    overlay); nothing when the display is not installed."""
    state: _State | None = getattr(viewer, "_attnseg_display", None)
    if state is not None:
        _camera_ready(wait=True)
        _apply(viewer, state, create=None)


def _apply(viewer: Any, state: _State, create: int | None) -> None:
    axes = _anatomical_axes(viewer)
    if axes is None:
        if state.applied:  # no scan in patient space any more: napari's own display
            _set_orientation(viewer, NAPARI_DEFAULT)
            state.applied = False
        _set_letters(viewer, None)
        return
    displayed = [axes[d] for d in viewer.dims.displayed]
    if min(displayed) < 0:  # a non-spatial axis (time, channel) is on screen
        _set_letters(viewer, None)
        return
    if not _camera_ready(wait=create is None):  # napari's camera maths is being imported
        _schedule(viewer, state)
        return
    if len(displayed) == 2:
        state.last3d = None
        v, h = orientation_for(displayed, state.convention)
        depth = orientation_for([a for a in range(3) if a not in displayed] + displayed,
                                state.convention)[0]
        _set_orientation(viewer, (depth, v, h))
        letters = letters_2d(displayed, (v, h))
    else:
        orientation = orientation_for(displayed, state.convention)
        if not state.applied or state.last3d != tuple(displayed):  # then the user's camera
            _set_orientation(viewer, orientation)
            state.last3d = tuple(displayed)
        cam = viewer.camera
        letters = letters_3d(displayed, cam.up_direction, cam.view_direction,
                             [str(getattr(o, "value", o)) for o in cam.orientation])
    state.applied = True
    if not _set_letters(viewer, letters, create):  # one more overlay on the next turn
        _schedule(viewer, state, 0)


def ensure_display(viewer: Any, convention: str | None = None) -> None:
    """Install the display convention on ``viewer`` once (the default convention unless given);
    it then follows layers, dims and, in 3D, the camera."""
    if viewer is None:
        return
    _camera_ready()  # napari's camera maths: imported in the background from now on
    state = getattr(viewer, "_attnseg_display", None)
    if state is None:
        state = _State(convention or default_convention())
        viewer._attnseg_display = state

        def handler(*_: Any) -> None:
            try:
                apply_display(viewer)
            except Exception:  # noqa: BLE001 - the display must never break the viewer
                logger.exception("could not apply the display convention")

        for emitter in (viewer.layers.events.inserted, viewer.layers.events.removed,
                        viewer.dims.events.order, viewer.dims.events.ndisplay,
                        viewer.dims.events.ndim, viewer.camera.events.angles):
            emitter.connect(handler)
    elif convention is not None:
        state.convention = choose(convention, CONVENTIONS, "display convention")
    apply_display(viewer)


def set_display_convention(viewer: Any, convention: str = "radiological") -> None:
    """Show ``viewer``'s scans by the ``"radiological"`` (patient's right on the screen's left)
    or ``"neurological"`` (right on the right) convention, with orientation letters (applied at
    once: an explicit request waits for nothing)."""
    ensure_display(viewer, choose(convention, CONVENTIONS, "display convention"))
    settle_display(viewer)


def ensure_current_viewer_display() -> None:
    """:func:`ensure_display` on napari's current viewer (readers have no viewer argument)."""
    try:
        import napari

        viewer = napari.current_viewer()
    except Exception as exc:  # noqa: BLE001 - no viewer (scripts): nothing to display
        logger.debug("no current viewer: %s", exc)
        return
    ensure_display(viewer)
