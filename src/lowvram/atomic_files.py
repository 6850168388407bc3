"""Write a set of output files all or nothing, never through a name someone else could plant.

Each file is written to a temporary created exclusively (O_CREAT|O_EXCL, random name — `tempfile.mkstemp`)
in its destination's own folder, so a symlink planted at a predictable `out.png.part` is never followed
and the final `os.replace` is an atomic rename on the same file system (a link at the destination itself
is replaced, not followed). Only when every temporary is complete are they renamed into place; any failure
removes every temporary and every file already renamed, so a batch is never half written.
"""

from __future__ import annotations

import os
import tempfile
from typing import BinaryIO, Callable

from .errors import UserError

# mkstemp creates files readable by their owner only; outputs get the usual permissions, less the umask.
DEFAULT_FILE_MODE = 0o666


def _umask() -> int:
    """The process umask: Python can only read it by setting it, so it is set back at once."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_all(targets: list[tuple[str, Callable[[BinaryIO], None]]]) -> list[str]:
    """`write(file)` for each (path, write) into its own temporary, then all renamed to their paths."""
    for path, _ in targets:
        if os.path.isdir(path):
            raise UserError(f"{path} is a folder: give the output a file name, e.g. {os.path.join(path, 'out.png')}.")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise UserError(f"The folder of {path} does not exist: create it or choose another output path.")
    mode = DEFAULT_FILE_MODE & ~_umask()
    temps: list[str] = []
    placed: list[str] = []
    current = targets[0][0] if targets else ""
    try:
        for path, write in targets:
            current = path
            folder, base = os.path.split(os.path.abspath(path))
            fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".part", dir=folder)
            temps.append(tmp)
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.chmod(tmp, mode)
        for (path, _), tmp in zip(targets, temps):
            current = path
            os.replace(tmp, path)
            placed.append(path)
    except BaseException as e:
        for p in temps[len(placed):] + placed:
            try:
                os.unlink(p)
            except OSError:
                pass
        if isinstance(e, OSError):
            raise UserError(f"Cannot write {current}: {e.strerror or e}; nothing was written — check the output folder "
                            "and free space.") from None
        raise
    return [path for path, _ in targets]
