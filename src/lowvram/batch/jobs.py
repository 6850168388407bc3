"""Reading a jobs file: one A1111 txt2img body per line, each checked whole before any weight is read.

A batch of thousands of images should not stop at line 900 for a typo: every line is parsed, validated
with the server's own body model and mapped to a Session request (model and LoRA names resolved, sizes
bounded) up front, and the first bad line is named in one sentence.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..errors import UserError


@dataclass
class BatchLine:
    """One line of the jobs file as the Session will run it."""

    number: int  # 1-based, as editors show it; also the output files' prefix
    request: object  # generate.request.GenerateRequest (output=None: images come back in memory)

    @property
    def images(self) -> int:
        return self.request.batch


def read_jobs(path: str, registry, quality: str | None) -> list[BatchLine]:
    """Every non-blank line of `path` as a BatchLine; UserError naming the first bad line."""
    from pydantic import ValidationError

    from ..server.a1111 import Txt2ImgBody, body_request
    from ..generate.samplers import resolve_sampler
    from ..server.models import UnknownName
    from ..units import check_resolution

    if not os.path.isfile(path):
        raise UserError(f"The jobs file {path} does not exist: give a .jsonl file with one A1111 txt2img request per line.")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"Cannot read the jobs file {path} ({getattr(e, 'strerror', None) or e}): "
                        "give a UTF-8 text file with one JSON object per line.") from None
    lines: list[BatchLine] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"Line {number} of {path}"
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise UserError(f"{where} is not valid JSON ({e.msg} at column {e.colno}): "
                            "write one JSON object per line.") from None
        except (ValueError, RecursionError) as e:  # integers past int_max_str_digits; nesting past the stack
            reason = "nested too deeply" if isinstance(e, RecursionError) else " ".join(str(e).split(":")[0].split())[:120]
            raise UserError(f"{where} is not usable JSON ({reason}): write one JSON object per line.") from None
        if not isinstance(obj, dict):
            raise UserError(f"{where} is a JSON {type(obj).__name__}, not an object: write one object "
                            "with A1111's txt2img fields (prompt, seed, steps...) per line.")
        try:
            body = Txt2ImgBody.model_validate(obj)
        except ValidationError as e:
            first = e.errors()[0]
            field = ".".join(str(x) for x in first.get("loc", ())) or "the object"
            raise UserError(f"{where}: {field}: {first.get('msg', 'invalid value')} — fix that field.") from None
        try:
            req, spec = body_request(registry, body, "txt2img", quality)
            # What the Session would refuse only when the line's turn comes (it checks these again):
            check_resolution(req.width, req.height, spec.latent_factor, spec.name)
            if req.sampler or req.schedule:
                resolve_sampler(req.sampler, req.schedule, spec.family)
        except UnknownName:  # the server's sentence points at its HTTP listing; here the flags decide
            models = ", ".join(registry.models) or "none"
            loras = ", ".join(registry.loras) or "none"
            raise UserError(f"{where} names a model or LoRA this batch does not offer (models: {models}; LoRAs: "
                            f"{loras}): fix the name, or add it with --model / --models-dir.") from None
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
        lines.append(BatchLine(number, req))
    if not lines:
        raise UserError(f"The jobs file {path} has no requests: write one A1111 txt2img JSON object per line.")
    return lines

