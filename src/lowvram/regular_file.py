"""Open a user-named file only if it is a regular file, without ever blocking on it.

A FIFO, a socket or a device named as a checkpoint or config would make a plain `open()` or `read()`
wait forever (a FIFO with no writer) or read without end (/dev/zero). The path is checked with
`os.stat` before opening, opened with O_NONBLOCK (so a FIFO swapped in after the check cannot block the
open), and checked again on the open descriptor.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from .errors import UserError

# What `os.stat` says a path is, for the sentence that refuses it.
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def regular_file_size(path: str | os.PathLike, what: str = "file") -> int:
    """The size of `path` if it is a regular file (symlinks followed); else UserError naming what it is."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise UserError(f"Cannot read {path}: {e.strerror or e}; check the path.") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{path} is {_kind(st.st_mode)}, not a regular file: give the path of a {what}.")
    return st.st_size


def open_regular(path: str | os.PathLike, what: str = "file") -> BinaryIO:
    """`path` opened for binary reading, refused (one sentence) unless it is a regular file."""
    path = os.fspath(path)
    regular_file_size(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise UserError(f"Cannot read {path}: {e.strerror or e}; check the path.") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped for something else between the check and the open
            raise UserError(f"{path} is {_kind(st.st_mode)}, not a regular file: give the path of a {what}.")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
