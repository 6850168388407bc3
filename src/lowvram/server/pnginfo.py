"""A1111 `parameters` text back into fields, for POST /sdapi/v1/png-info (no library parses it).

The inverse of generate/infotext.py: the prompt, `Negative prompt: ...`, then one line of `Key: value`
pairs where values holding a comma or colon are double-quoted with backslash escapes.
"""

from __future__ import annotations

import json
import re

# One `Key: value` pair: a quoted value (with escapes) or everything up to the next comma.
_PAIR = re.compile(r'\s*([\w][\w \-/]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')
MIN_PAIRS = 3  # a last line with fewer pairs is part of the prompt (A1111's rule)


def parse_infotext(text: str) -> dict:
    """{"Prompt", "Negative prompt", and every field}, numbers as numbers where they parse."""
    lines = text.strip().split("\n")
    params: dict = {}
    last = lines[-1] if lines else ""
    pairs = _PAIR.findall(last)
    if len(pairs) >= MIN_PAIRS:
        lines = lines[:-1]
        for key, value in pairs:
            params[key.strip()] = _value(value.strip())
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].lstrip()
        (negative if in_negative else prompt).append(line)
    out = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    out.update(params)
    if isinstance(out.get("Size"), str) and "x" in out["Size"]:
        w, _, h = out["Size"].partition("x")
        if w.isdigit() and h.isdigit():
            out["Size-1"], out["Size-2"] = int(w), int(h)  # A1111 splits Size the same way
    return out


def _value(v: str):
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        try:
            return json.loads(v)  # A1111 quotes with JSON's escapes
        except ValueError:
            return v[1:-1]
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v
