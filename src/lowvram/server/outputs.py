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


def save_pngs(root: str, kind: str, pngs: list[bytes], seeds: list[int], today=None) -> list[str]:
    """Write one encoded PNG per image (Job.pngs: the bytes the client gets too) and return their paths;
    all or nothing (atomic_files.write_all)."""
    from ..atomic_files import write_all

    day = (today or datetime.date.today()).isoformat()
    folder = os.path.join(root, FOLDERS[kind], day)
    os.makedirs(folder, exist_ok=True)
    n = _next_number(folder)
    return write_all([(os.path.join(folder, f"{n + k:05d}-{seed}.png"), lambda f, png=png: f.write(png))
                      for k, (seed, png) in enumerate(zip(seeds, pngs))])


def _next_number(folder: str) -> int:
    taken = [int(m.group(1)) for f in os.listdir(folder) if (m := _NUMBERED.match(f))]
    return max(taken, default=-1) + 1
