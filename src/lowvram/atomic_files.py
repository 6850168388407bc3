"""Write a set of output files all or nothing, never through a name someone else could plant.

Each file is written to a temporary created exclusively (O_CREAT|O_EXCL, random name) in its
destination's own folder, so a symlink planted at a predictable `out.png.part` is never followed
and the final `os.replace` is an atomic rename on the same file system (a link at the destination itself
is replaced, not followed). Only when every temporary is complete are they renamed into place; any failure
removes every temporary and every file already renamed, so a batch is never half written.
"""

from __future__ import annotations

import os
import secrets
from typing import BinaryIO, Callable

from .errors import UserError

# Outputs get the usual permissions: the kernel takes the umask off at creation. (tempfile.mkstemp would
# create them 0o600, and reading the umask to widen them means setting it process-wide for a moment,
# which races with every other thread creating files — the server's device workers.)
DEFAULT_FILE_MODE = 0o666
_EXCLUSIVE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_TEMP_ATTEMPTS = 100  # random names that collide: as tempfile tries (TMP_MAX)


def _exclusive_temp(folder: str, base: str) -> tuple[int, str]:
    """A new file `.{base}.RANDOM.part` in `folder`, never an existing name or a planted link (O_EXCL)."""
    for _ in range(_TEMP_ATTEMPTS):
        tmp = os.path.join(folder, f".{base}.{secrets.token_hex(4)}.part")
        try:
            return os.open(tmp, _EXCLUSIVE, DEFAULT_FILE_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name for {base} in {folder}")


def write_all(targets: list[tuple[str, Callable[[BinaryIO], None]]]) -> list[str]:
    """`write(file)` for each (path, write) into its own temporary, then all renamed to their paths."""
    for path, _ in targets:
        if os.path.isdir(path):
            raise UserError(f"{path} is a folder: give the output a file name, e.g. {os.path.join(path, 'out.png')}.")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise UserError(f"The folder of {path} does not exist: create it or choose another output path.")
    temps: list[str] = []
    placed: list[str] = []
    current = targets[0][0] if targets else ""
    try:
        for path, write in targets:
            current = path
            folder, base = os.path.split(os.path.abspath(path))
            fd, tmp = _exclusive_temp(folder, base)
            temps.append(tmp)
            with os.fdopen(fd, "wb") as f:
                write(f)
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
