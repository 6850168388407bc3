"""A1111-style `parameters` text, the de-facto standard image browsers read from PNGs."""

from __future__ import annotations


def _quote(v: str) -> str:
    """A1111 quotes values that contain its separators."""
    s = str(v)
    if "," in s or ":" in s or '"' in s or "\n" in s:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return s


def build_infotext(prompt: str, negative: str, params: dict[str, object]) -> str:
    """`prompt\\nNegative prompt: ...\\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512, ...`"""
    lines = [prompt]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in params.items() if v is not None and v != ""))
    return "\n".join(lines)
