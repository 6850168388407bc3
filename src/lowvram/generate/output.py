"""Write generated images as PNGs with the A1111 `parameters` chunk image browsers read."""

from __future__ import annotations

import os

from ..atomic_files import write_all

FIRST = ("Steps", "Sampler", "CFG scale", "Seed", "Size", "Model", "Batch pos")  # A1111's order; other fields follow


def write_pngs(images, output: str, prompt: str, negative: str, params: dict) -> list[str]:
    """One PNG per image (float RGB arrays in [0, 1]); `params` are the A1111 fields shared by the batch,
    Size and the batch position are added per image. A batch is numbered: out-0.png, out-1.png..."""
    import numpy as np
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from .infotext import build_infotext

    targets = []
    for k, arr in enumerate(images):
        info = PngInfo()
        fields = dict(params, **{"Size": f"{arr.shape[1]}x{arr.shape[0]}", "Batch pos": k if len(images) > 1 else None})
        fields = {key: fields[key] for key in FIRST if key in fields} | {key: v for key, v in fields.items() if key not in FIRST}
        info.add_text("parameters", build_infotext(prompt, negative, fields))
        path = output if len(images) == 1 else numbered(output, k)
        image = Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype("uint8"))
        targets.append((path, lambda f, image=image, info=info: image.save(f, format="PNG", pnginfo=info)))
    return write_all(targets)  # all images or none; never a half-written one under a final name


def check_output(output: str) -> None:
    """Refuse an output path that cannot be written, before any weight is read."""
    from ..errors import UserError

    path = os.path.abspath(output)
    if os.path.isdir(path):
        raise UserError(f"-o {output} is a folder: give a file name such as {os.path.join(output, 'image.png')}.")
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise UserError(f"The output folder {folder} does not exist: create it or choose another -o path.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"The output folder {folder} is not writable: choose another -o path.")
    ext = os.path.splitext(path)[1].lower()
    if ext not in ("", ".png"):
        raise UserError(f"-o {output}: lowvram writes PNG images; give a name ending in .png.")


def encode_png(arr, infotext: str) -> bytes:
    """One float RGB array in [0, 1] as PNG bytes with the A1111 `parameters` chunk."""
    import io

    import numpy as np
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", infotext)
    buf = io.BytesIO()
    Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype("uint8")).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def write_images(images, paths: list[str], infotexts: list[str]) -> list[str]:
    """A batch with its infotexts, all or nothing (atomic_files.write_all: exclusive temporaries, then renames)."""
    targets = []
    for arr, path, text in zip(images, paths, infotexts):
        data = encode_png(arr, text)
        targets.append((path, lambda f, data=data: f.write(data)))
    return write_all(targets)


def numbered(path: str, k: int) -> str:
    root, ext = os.path.splitext(path)
    return f"{root}-{k}{ext or '.png'}"


def plan_summary(plan) -> str:
    """The plan in one line for the PNG: placement and precision of each component."""
    parts = []
    for c in plan.components:
        what = c.placement if c.placement != "streamed" else f"streamed {c.resident_units}/{c.total_units}"
        parts.append(f"{c.name} {what} {c.precision}")
    return "; ".join(parts)
