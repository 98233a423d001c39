"""Exceptions with messages meant for the user (shown as napari notifications or CLI errors)."""

from __future__ import annotations

from pathlib import Path


class AttnsegError(Exception):
    """Base class of every error the plugin raises on purpose; its message is user-facing."""


class ReadError(AttnsegError):
    """A file or folder could not be read as a scan; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class WriteError(AttnsegError):
    """A result could not be saved; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class GeometryError(AttnsegError):
    """Two arrays or layers that must share a grid do not (shape, spacing or affine differ)."""


class ModelError(AttnsegError):
    """A model folder, configuration or input does not fit; the message says how to fix it."""


class TrainingDataError(AttnsegError, ValueError):
    """Training data cannot give a meaningful (fine-)tune: no foreground in the reviewed slices,
    too few slices to hold one out, ...; the message names the data and what to change."""


class MissingDependencyError(AttnsegError, ImportError):
    """An optional package is needed; the message gives the install command."""

    def __init__(self, package: str, extra: str | None = None, purpose: str = ""):
        hint = f"pip install 'napari-attnseg[{extra}]'" if extra else f"pip install {package}"
        what = f" for {purpose}" if purpose else ""
        super().__init__(f"The package '{package}' is needed{what} but is not installed: {hint}")
