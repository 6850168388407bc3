"""Images in request bodies (base64, A1111's way) decoded safely, and images out as base64 PNG."""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from ..errors import UserError


def decode_image(data, what: str):
    """A PIL image from base64 (optionally a `data:image/...;base64,` URL), its size checked from the
    header before a pixel is decoded (lowvram's input cap)."""
    from PIL import Image, UnidentifiedImageError

    from ..generate.inputs import MAX_INPUT_PIXELS

    if not isinstance(data, str) or not data:
        raise UserError(f"The {what} must be a base64-encoded image.")
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        raise UserError(f"The {what} is not valid base64: send the image file's bytes base64-encoded.") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(raw))  # reads the header only
            w, h = im.size
            if w * h > MAX_INPUT_PIXELS:
                raise UserError(f"The {what} is {w}x{h}, more than the server decodes ({MAX_INPUT_PIXELS // 10**6} "
                                "megapixels): send a smaller image.")
            im.load()
            return im
    except Image.DecompressionBombError:
        raise UserError(f"The {what} declares too many pixels to decode: send an image of at most "
                        f"{MAX_INPUT_PIXELS // 10**6} megapixels.") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise UserError(f"The {what} is not an image the server can read (PNG, JPEG, WebP...).") from None


def encode_b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def png_text(png_image) -> dict[str, str]:
    """The text chunks of a PIL image (A1111's `parameters` among them)."""
    info = dict(getattr(png_image, "text", {}) or {})
    info.update({k: v for k, v in png_image.info.items() if isinstance(v, str) and k not in info})
    return info
