"""The images a request brings (init image, mask, control image): read safely, sized as the user means.

Read under a pixel cap before decoding (a PNG can declare 30000x30000 in a few bytes), never from
something that is not a regular file (a FIFO would block), and resized the way A1111 does: an img2img
run takes the init image's own size by default (rounded to the model's multiple), and an explicit size
keeps the aspect ratio (crop, or pad) unless the user asks to stretch.
"""

from __future__ import annotations

import os
import stat
import warnings

from ..errors import UserError

# The largest input image decoded: 4096 x 4096 (16.8 MP, 64 MB as RGB), four times the largest
# side any catalogue model generates at; PIL's own bomb limit (89 MP) would accept 1.5 GB images.
MAX_INPUT_PIXELS = 4096 * 4096
RESIZE_MODES = {0: "stretch", 1: "crop and resize", 2: "resize and pad"}  # A1111's resize_mode values


def read_image(src, what: str, mode: str):
    """A PIL image in `mode` from a path or a PIL image, or one sentence saying why not."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(src, Image.Image):
        _check_pixels(src.size, what, "the image")
        return src.convert(mode)
    path = str(src)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"The {what} {path} does not exist.") from None
    except OSError as e:
        raise UserError(f"The {what} {path} cannot be read ({e.strerror}).") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"The {what} {path} is not a regular file: give an image file (PNG, JPEG, WebP...).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # reads the header only
                _check_pixels(im.size, what, path)
                return im.convert(mode).copy()
    except Image.DecompressionBombError:
        raise UserError(f"The {what} {path} declares too many pixels to decode: give an image of at most "
                        f"{MAX_INPUT_PIXELS // 10**6} megapixels.") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise UserError(f"The {what} {path} is not an image lowvram can read (PNG, JPEG, WebP...).") from None


def _check_pixels(size: tuple[int, int], what: str, name: str) -> None:
    w, h = size
    if w <= 0 or h <= 0 or w * h > MAX_INPUT_PIXELS:
        raise UserError(f"The {what} {name} is {w}x{h}, more than lowvram decodes ({MAX_INPUT_PIXELS // 10**6} megapixels): "
                        "give a smaller image.")


def size_from_image(image, factor: int) -> tuple[int, int]:
    """The init image's size rounded down to the model's multiple (at least one multiple)."""
    w, h = image.size
    return max(factor, w // factor * factor), max(factor, h // factor * factor)


def fit(image, width: int, height: int, resize_mode: int):
    """`image` at width x height as A1111's resize modes do it: 0 stretch, 1 crop to the aspect then
    resize (no distortion, edges cut), 2 resize inside then pad with the edge colours (nothing cut)."""
    from PIL import Image, ImageOps

    resample = Image.LANCZOS
    if image.size == (width, height):
        return image
    if resize_mode == 0:
        return image.resize((width, height), resample)
    if resize_mode == 1:
        return ImageOps.fit(image, (width, height), resample)
    if resize_mode == 2:
        return ImageOps.pad(image, (width, height), resample, color=_edge_colour(image))
    raise UserError(f"Unknown resize mode {resize_mode}: give 0 (stretch), 1 (crop and resize) or 2 (resize and pad).")


def _edge_colour(image):
    """The mean colour of the image's border: padding in it is less visible than black."""
    from PIL import ImageStat

    w, h = image.size
    border = [image.crop(b) for b in ((0, 0, w, 1), (0, h - 1, w, h), (0, 0, 1, h), (w - 1, 0, w, h))]
    means = [ImageStat.Stat(b).mean for b in border]
    avg = [round(sum(m[i] for m in means) / len(means)) for i in range(len(means[0]))]
    return avg[0] if len(avg) == 1 else tuple(avg)
