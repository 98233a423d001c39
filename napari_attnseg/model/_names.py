"""Model names, versions and the registry's file names: plain words that can never be paths."""

from __future__ import annotations

import re

from ..errors import ModelError

ENV_VAR = "ATTNSEG_MODELS"
ACTIVE_FILE = "active.json"
#: inside a committed version folder: "make me active" (removed once active.json says so)
ACTIVATE_MARKER = ".activate"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
VERSION_RE = NAME_RE

__all__ = ["ACTIVATE_MARKER", "ACTIVE_FILE", "ENV_VAR", "NAME_RE", "VERSION_RE", "check_name", "check_version",
           "valid_name", "version_key"]


def version_key(version: str) -> tuple:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def valid_name(name: object) -> bool:
    return isinstance(name, str) and len(name) <= 128 and bool(NAME_RE.match(name)) and not name.endswith(".json")


def check_name(name: object) -> str:
    """``name`` if it is a valid model name, else :class:`ModelError` (a name is a plain word:
    letters, digits, '.', '_' or '-', starting with a letter or digit; never a path)."""
    if not valid_name(name):
        raise ModelError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' or '-', starting with a letter or digit "
            "(a model name cannot be a path)"
        )
    return str(name)


def check_version(version: object) -> str:
    """``version`` as a string if it is a valid version (a number such as 3, or a plain word),
    else :class:`ModelError`."""
    text = str(version) if isinstance(version, int) and not isinstance(version, bool) else version
    if not isinstance(text, str) or len(text) > 64 or not VERSION_RE.match(text):
        raise ModelError(f"invalid model version {version!r}: a version is a number such as 3 "
                         "(it cannot be a path)")
    return text
