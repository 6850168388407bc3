"""Every JSON lowvram reads from the user's files goes through here.

`json.load` alone lets damaged or crafted files escape as RecursionError (deep nesting), ValueError
(a number of more than 4300 digits, bad UTF-8), or — once parsed — as AttributeError / KeyError /
IndexError in callers that expected an object and got a list. Here the size is bounded before reading,
parse problems and nesting deeper than any real file are caught, and the top-level type the caller
expects is checked: anything else is one sentence naming the file.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .errors import UserError
from .regular_file import open_regular

# The largest JSON lowvram reads from a model folder is a config.json or model_index.json of a few
# kB to a few hundred kB (transformers' configs of multimodal encoders); 16 MiB leaves a wide margin
# and bounds what a corrupt or hostile file makes us allocate.
MAX_JSON_BYTES = 16 * 2**20
# Real configs nest 3-4 levels (vision_config.rope_scaling...), safetensors headers 3 (tensor entry ->
# data_offsets); 64 levels is far beyond any, and far below Python's recursion limit.
MAX_JSON_DEPTH = 64

_TYPE_NAMES = {dict: "a JSON object", list: "a JSON array", str: "a JSON string"}


def read_json(path: str | os.PathLike, what: str, expect: type = dict, fix: str = "download it again or repair it",
              max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The JSON value in `path`, of type `expect`; `what` says what the file should be ("a diffusers
    model_index.json") and `fix` what the user can do — both go into the one sentence of any error."""
    path = os.fspath(path)
    with open_regular(path, what) as f:
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise UserError(f"{path} is too large to be {what} (over {max_bytes} bytes); {fix}.")
    return parse_json(raw, path, what, expect, fix)


def parse_json(raw: bytes | str, source: str, what: str, expect: type = dict, fix: str = "download it again or repair it",
               unique_keys: bool = False) -> Any:
    """`raw` parsed as JSON of type `expect`, or UserError naming `source`; `unique_keys` also refuses an
    object that repeats a key (json keeps the last silently)."""
    hook = _unique_pairs if unique_keys else None
    try:
        value = json.loads(raw, object_pairs_hook=hook)
    except RecursionError:
        raise UserError(f"{source} is not usable JSON: it is nested too deeply; {fix}.") from None
    except _DuplicateKey as e:
        raise UserError(f"{source} is not usable JSON: key {str(e.args[0])[:60]!r} appears twice; {fix}.") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, integers past int_max_str_digits
        reason = " ".join(str(e).split())[:120] or type(e).__name__
        raise UserError(f"{source} is not valid JSON ({reason}); {fix}.") from None
    if _depth_exceeds(value, MAX_JSON_DEPTH):
        raise UserError(f"{source} is not usable JSON: it nests deeper than {MAX_JSON_DEPTH} levels; {fix}.")
    if not isinstance(value, expect):
        want = _TYPE_NAMES.get(expect, expect.__name__)
        raise UserError(f"{source} is not {what}: it holds {_describe(value)} where {want} belongs; {fix}.")
    return value


class _DuplicateKey(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether containers nest deeper than `limit` — walked with a stack, not recursion."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            if d > limit:
                return True
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return False


def _describe(value: Any) -> str:
    for t, name in ((dict, "an object"), (list, "an array"), (str, "a string"), (bool, "a boolean"),
                    (int, "a number"), (float, "a number")):
        if isinstance(value, t):
            return name
    return "null"
