"""A diffusers folder's model_index.json, read once, the same way by inspection and loading."""

from __future__ import annotations

import os

from ..errors import UserError
from ..jsonfile import read_json

WHAT = "a diffusers model_index.json"
FIX = "point at a diffusers folder, or download it again"


def read_index(folder: str) -> dict:
    """model_index.json as a dict whose `_class_name`, if any, is a string; one sentence otherwise.

    Entries that are not `[library, class]` pairs are left for the callers, which skip them."""
    path = os.path.join(folder, "model_index.json")
    index = read_json(path, WHAT, dict, fix=FIX)
    name = index.get("_class_name")
    if name is not None and not (isinstance(name, str) and name.isidentifier()):
        raise UserError(f"{path} is not a valid {WHAT[2:]}: its _class_name {str(name)[:60]!r} is not a pipeline class name; {FIX}.")
    return index


def class_name(folder: str) -> str | None:
    """The `_class_name` of a folder's model_index.json; None if it has none or cannot be read."""
    try:
        return read_index(folder).get("_class_name")
    except UserError:
        return None
