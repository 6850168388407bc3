"""Parsing and printing of memory sizes and resolutions typed by users.

Written by hand because the libraries that parse sizes (humanfriendly, pint) either treat "GB" as
10^9 — which no GPU vendor or user means for VRAM — or pull in a unit system we don't need.
Convention, documented in the README: "GB" and "GiB" both mean 2^30 bytes (an "8 GB" card has 8 GiB),
"MB"/"MiB" 2^20, "TB"/"TiB" 2^40; a bare number is gigabytes.
"""

from __future__ import annotations

import re

from .errors import UserError

_UNITS = {
    "": 2**30,  # bare number: gigabytes, what people mean by "--vram 8"
    "b": 1,
    "k": 2**10, "kb": 2**10, "kib": 2**10,
    "m": 2**20, "mb": 2**20, "mib": 2**20,
    "g": 2**30, "gb": 2**30, "gib": 2**30,
    "t": 2**40, "tb": 2**40, "tib": 2**40,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*([a-zA-Z]*)\s*$")

# Limits that keep absurd input from turning into absurd plans.
MAX_MEMORY_BYTES = 2**50  # 1 PiB
MAX_SIDE_PIXELS = 16384


def parse_size(text: str | int | float, what: str = "memory size") -> int:
    """Parse "8 GB", "8GiB", "8192MB", "12" (GB) into bytes; raise UserError otherwise."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        m = _SIZE_RE.match(str(text))
        if not m or m.group(2).lower() not in _UNITS:
            raise UserError(
                f"Cannot read the {what} {str(text)!r}: write a number with a unit, e.g. '8GB', '8 GiB' or '8192MB'."
            )
        value, unit = float(m.group(1)), m.group(2).lower()
    n = int(round(value * _UNITS[unit]))
    if n <= 0 or n > MAX_MEMORY_BYTES:
        raise UserError(f"The {what} {str(text)!r} is out of range: give a positive size below 1 PiB.")
    return n


def format_bytes(n: float) -> str:
    """Bytes as a short human string in binary units ("7.8 GiB")."""
    n = float(n)
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def format_count(n: int) -> str:
    """Parameter counts as "2.57 B" / "123.1 M"."""
    if n >= 1e9:
        return f"{n / 1e9:.2f} B"
    if n >= 1e6:
        return f"{n / 1e6:.1f} M"
    if n >= 1e3:
        return f"{n / 1e3:.1f} K"
    return str(n)


def check_count(value: int, low: int, high: int, flag: str, what: str) -> None:
    """A whole-number option (steps, batch) within its range, or one sentence saying which it is."""
    if not low <= value <= high:
        raise UserError(f"{flag} {value} is out of range: give {low} to {high} {what}.")


def check_resolution(width: int, height: int, factor: int, model: str) -> None:
    """Refuse sizes the model cannot take: not a multiple of its latent factor, or absurd."""
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, int) or v <= 0:
            raise UserError(f"The {name} {v!r} is not a positive whole number of pixels.")
        if v > MAX_SIDE_PIXELS:
            raise UserError(f"The {name} {v} is above the {MAX_SIDE_PIXELS}-pixel limit: choose a smaller size.")
        if v % factor:
            raise UserError(
                f"The {name} {v} is not a multiple of {factor}, which {model} needs: try {max(factor, v // factor * factor)}."
            )
