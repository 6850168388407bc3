"""Where a batch's images go: `DIR/NNNNN-SEED.png`, NNNNN the jobs file's line number.

The name comes from the line, so a rerun knows which lines are finished by listing DIR, whatever
machine made them; the seed is in the name as in A1111's outputs (and tells seed -1's pick). A line's
images are written together through atomic_files (temporaries, then renames), so a stopped run leaves
either all of a line's images or none of them, never a half file (generate.output.write_images: exclusive
temporaries in DIR, renamed once all are complete).
"""

from __future__ import annotations

import os
import re

from ..errors import UserError

LINE_DIGITS = 5  # A1111's counter width in its output names; longer jobs files widen it


def prepare_dir(out_dir: str) -> None:
    """Create DIR (its parent must exist), or refuse a path that is not a writable folder."""
    path = os.path.abspath(out_dir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"--out {out_dir} is a file: give a folder for the images.")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise UserError(f"The folder holding --out {out_dir} does not exist: create {parent} first.")
    os.makedirs(path, exist_ok=True)
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"--out {out_dir} is not writable: choose another folder.")


def image_names(line_number: int, seeds: list[int]) -> list[str]:
    """The file names of one line's images (one per seed: a batch's image k has seed + k)."""
    return [f"{line_number:0{LINE_DIGITS}d}-{seed}.png" for seed in seeds]


def finished_lines(out_dir: str) -> set[int]:
    """Line numbers with images in DIR: written all together, so any one means the line is done."""
    pattern = re.compile(r"^(\d{%d,})-\d+\.png$" % LINE_DIGITS)
    return {int(m.group(1)) for f in os.listdir(out_dir) if (m := pattern.match(f))}


def write_line(out_dir: str, names: list[str], images, infotexts: list[str]) -> list[str]:
    """One line's images (float RGB arrays) as PNGs with their infotext into DIR, all or nothing."""
    from ..generate.output import write_images

    return write_images(images, [os.path.join(out_dir, n) for n in names], infotexts)
