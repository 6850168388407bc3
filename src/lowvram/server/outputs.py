"""Where the server saves what it makes: A1111's layout, so galleries and image browsers find it.

`OUTPUTS/txt2img-images/YYYY-MM-DD/NNNNN-SEED.png` (img2img-images for img2img), NNNNN counting on from
the highest number already in that day's folder, as A1111's `modules/images.py` save_image names them.
Only the worker thread saves, so numbers never collide.
"""

from __future__ import annotations

import datetime
import os
import re

_NUMBERED = re.compile(r"^(\d{5})-")
FOLDERS = {"txt2img": "txt2img-images", "img2img": "img2img-images"}


def save_images(root: str, kind: str, images, seeds: list[int], infotexts: list[str], today=None) -> list[str]:
    """Write one PNG per image (with its infotext) and return their paths; all or nothing."""
    from ..generate.output import write_images

    day = (today or datetime.date.today()).isoformat()
    folder = os.path.join(root, FOLDERS[kind], day)
    os.makedirs(folder, exist_ok=True)
    n = _next_number(folder)
    paths = [os.path.join(folder, f"{n + k:05d}-{seed}.png") for k, seed in enumerate(seeds[:len(images)])]
    return write_images(images, paths, infotexts)


def _next_number(folder: str) -> int:
    taken = [int(m.group(1)) for f in os.listdir(folder) if (m := _NUMBERED.match(f))]
    return max(taken, default=-1) + 1
