"""Write generated images with the A1111 `parameters` text image browsers read: a PNG text chunk, or for
JPEG and WebP the EXIF UserComment, as A1111 does (`modules/images.py`, `save_image_with_geninfo`)."""

from __future__ import annotations

import os

from ..atomic_files import write_all
from ..errors import UserError

def write_pngs(images, output: str, prompt: str, negative: str, params: dict) -> list[str]:
    """One image per array (float RGB arrays in [0, 1]); `params` are the A1111 fields shared by the batch,
    Size and the batch position are added per image (infotext.build_infotext puts them in A1111's order).
    A batch is numbered: out-0.png, out-1.png..."""
    from .infotext import build_infotext

    texts = [build_infotext(prompt, negative, dict(params, **{"Size": f"{arr.shape[1]}x{arr.shape[0]}",
                                                             "Batch pos": k if len(images) > 1 else None}))
             for k, arr in enumerate(images)]
    return write_images(images, batch_paths(output, len(images)), texts)  # every suffix checked before anything is written


def check_output(output: str) -> None:
    """Refuse an output path that cannot be written, before any weight is read."""
    path = os.path.abspath(output)
    if os.path.isdir(path):
        raise UserError(f"-o {output} is a folder: give a file name such as {os.path.join(output, 'image.png')}.")
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise UserError(f"The output folder {folder} does not exist: create it or choose another -o path.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"The output folder {folder} is not writable: choose another -o path.")
    image_format(output)


def encode_image(arr, infotext: str, fmt: str = "PNG") -> bytes:
    """One float RGB array in [0, 1] as image bytes in `fmt`, the A1111 infotext where A1111 puts it."""
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype("uint8")).save(buf, **save_options(fmt, infotext))
    return buf.getvalue()


def encode_png(arr, infotext: str) -> bytes:
    return encode_image(arr, infotext, "PNG")


def write_images(images, paths: list[str], infotexts: list[str]) -> list[str]:
    """A batch with its infotexts, all or nothing (atomic_files.write_all: exclusive temporaries, then
    renames); each file in the format its suffix names."""
    targets = []
    for arr, path, text in zip(images, paths, infotexts):
        fmt = image_format(path)  # checked for every file before any is written
        # encoded inside write_all, so a failure there (a full disk) also leaves nothing behind
        targets.append((path, lambda f, arr=arr, text=text, fmt=fmt: f.write(encode_image(arr, text, fmt))))
    return write_all(targets)


def batch_paths(output: str, n: int) -> list[str]:
    """The files a batch of `n` images is written to: `output` itself for one image, else numbered."""
    return [output] if n == 1 else [numbered(output, k) for k in range(n)]


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


# -o suffix -> Pillow format. A1111 writes these three with the infotext (images.save_image_with_geninfo).
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
LOSSY_QUALITY = 80  # A1111's default "jpeg_quality" option, used for JPEG and (lossy) WebP
EXIF_UNICODE = b"UNICODE\x00"  # EXIF 2.3 UserComment character code for UCS-2/UTF-16 (piexif's "unicode")


def image_format(path: str) -> str:
    """The Pillow format `-o PATH` asks for, from its suffix (none: PNG); anything else is refused."""
    ext = os.path.splitext(path)[1].lower()
    if not ext:
        return "PNG"
    if ext not in IMAGE_FORMATS:
        raise UserError(f"lowvram writes PNG, JPEG or WebP images, not {ext}: give -o a .png, .jpg or .webp name.")
    return IMAGE_FORMATS[ext]


def exif_user_comment(text: str) -> bytes:
    """EXIF bytes holding `text` as the UserComment, encoded as A1111 writes it (piexif.helper.UserComment.dump
    with encoding="unicode": the 8-byte UNICODE code, then UTF-16 big-endian)."""
    from PIL import ExifTags, Image

    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment] = EXIF_UNICODE + text.encode("utf-16-be")
    return exif.tobytes()


def save_options(fmt: str, infotext: str) -> dict:
    """Keyword arguments for Pillow's `Image.save` that write `fmt` with the infotext where A1111 puts it."""
    if fmt == "PNG":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text("parameters", infotext)
        return {"format": "PNG", "pnginfo": info}
    return {"format": fmt, "quality": LOSSY_QUALITY, "exif": exif_user_comment(infotext)}


def read_infotext(path: str) -> str | None:
    """The A1111 parameters text of an image file (PNG text chunk or EXIF UserComment), or None."""
    from PIL import ExifTags, Image

    with Image.open(path) as im:
        if "parameters" in im.info:
            return im.info["parameters"]
        raw = im.getexif().get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.UserComment)
    if not raw:
        return None
    if raw.startswith(EXIF_UNICODE):
        return raw[len(EXIF_UNICODE):].decode("utf-16-be", errors="replace")
    return raw[8:].decode("utf-8", errors="replace")  # ASCII/undefined code: the text after the 8-byte code
