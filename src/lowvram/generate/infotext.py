"""A1111-style `parameters` text, the de-facto standard image browsers and sites read from images.

The format is A1111's `processing.create_infotext`: the prompt, `Negative prompt: ...` on its own line,
then one line of `Key: value` pairs joined by ", ", a value quoted as JSON when it holds a comma, a colon
or a newline (`infotext_utils.quote`). Readers split that last line with A1111's regex
(`infotext_utils.parse_generation_parameters`); tests/fixtures/a1111.py is that reader.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

# A1111's order for the fields it writes (processing.create_infotext); other fields follow in the order given,
# then "Version" last, as A1111 does.
FIRST = ("Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model", "VAE hash", "VAE",
         "Denoising strength", "Clip skip", "Batch size", "Batch pos")
LAST = ("Version",)


def quote(value: object) -> str:
    """A1111's `infotext_utils.quote`: JSON-quoted when the value holds a separator, else as is."""
    s = str(value)
    if "," not in s and "\n" not in s and ":" not in s:
        return s
    return json.dumps(s, ensure_ascii=False)


def number(x: float) -> str:
    """A number as A1111 prints it in infotext and prompts: 7.0 -> 7, 0.8 -> 0.8."""
    return repr(float(x)) if float(x) != int(x) else str(int(x))


def ordered(fields: dict) -> dict:
    """`fields` in A1111's order: its own fields first, extras in the order given, the version last."""
    head = {k: fields[k] for k in FIRST if k in fields}
    tail = {k: fields[k] for k in LAST if k in fields}
    return head | {k: v for k, v in fields.items() if k not in head and k not in tail} | tail


def build_infotext(prompt: str, negative: str, params: dict[str, object]) -> str:
    """`prompt\\nNegative prompt: ...\\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512, ...`;
    fields whose value is None or "" are left out."""
    line = ", ".join(f"{k}: {quote(v)}" for k, v in ordered(params).items() if v is not None and v != "")
    negative_line = f"\nNegative prompt: {negative}" if negative else ""
    return f"{prompt}{negative_line}\n{line}".strip()


@dataclass(frozen=True)
class LoraUse:
    """One LoRA as A1111 records it: the name in `<lora:name:weight>` (its file name without the
    extension) and its short hash (tests: `lora_hash`)."""

    name: str
    weight: float = 1.0
    hash: str | None = None


@dataclass(frozen=True)
class GenerationRecord:
    """What one generation was, in the terms A1111's infotext has fields for. `sampler`/`schedule` are
    A1111 names (generate/samplers.py `a1111_names`); `extra` holds further fields in order (e.g.
    "lowvram plan")."""

    prompt: str
    steps: int
    sampler: str
    cfg_scale: float
    seed: int
    width: int
    height: int
    negative: str = ""
    schedule: str = "Automatic"
    model_name: str | None = None
    model_hash: str | None = None  # A1111's short hash: the first 10 hex of the file's sha256
    loras: tuple = ()  # LoraUse...
    denoising_strength: float | None = None  # img2img / inpaint
    version: str | None = None  # default: "lowvram <installed version>"
    extra: tuple = field(default=())  # (key, value) pairs


def _alias(name: str) -> str:
    """A LoRA name as A1111 writes it in infotext: without ':' or ',' (they would split the field)."""
    return name.replace(":", "").replace(",", "")


def lora_tags(loras) -> str:
    """`<lora:name:weight>` for each LoRA, as A1111 prompts carry them."""
    return " ".join(f"<lora:{_alias(lo.name)}:{number(lo.weight)}>" for lo in loras)


def prompt_with_loras(prompt: str, loras) -> str:
    """The prompt with a `<lora:name:weight>` tag for each LoRA it does not already name (A1111 runs the
    LoRAs named in the prompt, so a reader re-running the infotext gets the same LoRAs)."""
    missing = [lo for lo in loras if f"<lora:{_alias(lo.name)}:" not in prompt]
    return f"{prompt} {lora_tags(missing)}".strip() if missing else prompt


def lora_hashes(loras) -> str | None:
    """A1111's `Lora hashes` value: `name: hash, name: hash` (names without ':' or ',', as A1111 strips them)."""
    items = [f"{_alias(lo.name)}: {lo.hash}" for lo in loras if lo.hash]
    return ", ".join(items) or None


# The ControlNet extension's resize modes (its external_code.ResizeMode), by A1111's resize_mode number:
# the numbers generate/inputs.py `fit` takes.
CONTROL_RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")


def controlnet_unit(model: str, weight: float, resize_mode: int, start: float = 0.0, end: float = 1.0) -> str:
    """The value of A1111's `ControlNet 0` field, as the ControlNet extension writes it (its
    scripts/infotext.py `serialize_unit`: `Field Name: value` pairs joined by ", ", no ':' or ',' inside a
    value); lowvram runs the control image as given, so the module is always "none"."""
    fields = {"Module": "none", "Model": _alias(model), "Weight": float(weight),
              "Resize Mode": CONTROL_RESIZE_MODES[resize_mode], "Guidance Start": float(start),
              "Guidance End": float(end), "Pixel Perfect": False, "Control Mode": "Balanced"}
    return ", ".join(f"{k}: {v}" for k, v in fields.items())


def version_text() -> str:
    from .. import __version__

    return f"lowvram {__version__}"


def record_parts(rec: GenerationRecord) -> tuple[str, str, dict]:
    """(prompt, negative prompt, fields) of a record, ready for `build_infotext` (or `write_pngs`, which adds
    each image's Size and batch position)."""
    fields = {"Steps": rec.steps, "Sampler": rec.sampler,
              "Schedule type": rec.schedule if rec.schedule and rec.schedule != "Automatic" else None,
              "CFG scale": number(rec.cfg_scale), "Seed": rec.seed, "Size": f"{rec.width}x{rec.height}",
              "Model hash": rec.model_hash, "Model": rec.model_name,
              "Denoising strength": None if rec.denoising_strength is None else number(rec.denoising_strength),
              "Lora hashes": lora_hashes(rec.loras)}
    fields.update(dict(rec.extra))
    fields["Version"] = rec.version or version_text()
    return prompt_with_loras(rec.prompt, rec.loras), rec.negative, {k: v for k, v in fields.items() if v is not None}


def infotext(rec: GenerationRecord) -> str:
    """The A1111 `parameters` text of a record."""
    return build_infotext(*record_parts(rec))
