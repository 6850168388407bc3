"""A1111-style `parameters` text, the de-facto standard image browsers read from PNGs."""

from __future__ import annotations

from dataclasses import dataclass, field


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


@dataclass
class GenerationRecord:
    """One image's generation as A1111 records it (the server and the CLI build the same text)."""

    prompt: str
    negative: str
    seed: int
    width: int
    height: int
    model: str
    model_path: str = ""
    loras: list = field(default_factory=list)  # [(path, weight)]
    fields: dict = field(default_factory=dict)  # Steps, Sampler, Schedule type, CFG scale, Denoising strength...
    batch_pos: int | None = None
    batch_size: int = 1
    extra: dict = field(default_factory=dict)  # lowvram's own fields, after A1111's


FIRST = ("Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model", "Batch size", "Batch pos",
         "Denoising strength")  # A1111's order; other fields follow


def a1111_infotext(rec: GenerationRecord) -> str:
    """The `parameters` text for one image."""
    import os

    fields = dict(rec.fields)
    fields.update({"Seed": rec.seed, "Size": f"{rec.width}x{rec.height}", "Model": rec.model})
    if rec.batch_size > 1:
        fields.update({"Batch size": rec.batch_size, "Batch pos": rec.batch_pos})
    if rec.loras:
        fields["Lora hashes"] = ", ".join(os.path.splitext(os.path.basename(p))[0] + f": {w}" for p, w in rec.loras)
    ordered = {k: fields[k] for k in FIRST if k in fields} | {k: v for k, v in fields.items() if k not in FIRST}
    ordered.update(rec.extra)
    return build_infotext(rec.prompt, rec.negative, ordered)
