"""Read a GGUF file's metadata and tensor table (names, shapes, quantisation types) — no data.

Uses the `gguf` package's reader, which memory-maps the file read-only and parses only the header;
tensor data pages are never touched. We add the checks that turn its exceptions into one sentence.
"""

from __future__ import annotations

import os

from ..errors import CheckpointError
from .tensors import TensorInfo

GGUF_MAGIC = b"GGUF"


def read_gguf_header(path: str | os.PathLike) -> tuple[list[TensorInfo], dict[str, object]]:
    path = os.fspath(path)
    name = os.path.basename(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise CheckpointError(f"Cannot read {path}: {e.strerror or e}.") from None
    if magic != GGUF_MAGIC:
        raise CheckpointError(f"{name} is not a GGUF file (bad magic {magic!r}); it is corrupt or has the wrong extension.")
    import gguf

    try:
        reader = gguf.GGUFReader(path, "r")
    except Exception as e:  # the reader raises ValueError/IndexError/struct errors on damage
        raise CheckpointError(f"{name} has a damaged GGUF header or tensor table ({type(e).__name__}: {e}); download it again.") from None
    size = os.path.getsize(path)
    meta: dict[str, object] = {}
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or not field.types:
            continue
        try:
            meta[field.name] = field.contents()
        except Exception:  # a field we cannot decode is not worth refusing the file for
            continue
    tensors = []
    for t in reader.tensors:
        qtype = gguf.GGMLQuantizationType(t.tensor_type).name
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # GGUF lists dims innermost first
        nbytes, offset = int(t.n_bytes), int(t.data_offset)
        if offset + nbytes > size:
            raise CheckpointError(f"{name} is truncated: tensor {t.name!r} ends past the end of the file; download it again.")
        tensors.append(TensorInfo(t.name, shape, qtype, nbytes, offset))
    return tensors, meta
