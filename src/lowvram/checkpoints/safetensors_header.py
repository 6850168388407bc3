"""Read a .safetensors header without touching the tensor data.

Hand-written on purpose: `safetensors.safe_open` memory-maps the whole file copy-on-write (Linux
refuses that for files larger than RAM + swap) and gives no control over how much a corrupt length
prefix makes it allocate. Reading the 8-byte length and the JSON header with bounded `read()` calls
costs a few hundred kB for any real checkpoint and lets every corruption be named to the user.
"""

from __future__ import annotations

import json
import math
import os
import struct

from ..errors import CheckpointError
from .tensors import TensorInfo

# Bytes per element for each safetensors dtype string.
DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E4M3FNUZ": 1, "F8_E5M2FNUZ": 1,
    "F8_E8M0": 1, "F4": 0.5, "F6_E2M3": 0.75, "F6_E3M2": 0.75,
}
# The safetensors format caps the header at 100 MB; real checkpoints have headers of a few hundred kB.
MAX_HEADER_BYTES = 100_000_000


def read_safetensors_header(path: str | os.PathLike) -> tuple[list[TensorInfo], dict[str, str]]:
    """Tensors and `__metadata__` of a safetensors file; CheckpointError names any corruption."""
    path = os.fspath(path)
    name = os.path.basename(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{name} is too short to be a safetensors file ({size} bytes): the download is incomplete; fetch it again.")
            (hlen,) = struct.unpack("<Q", prefix)
            if hlen > MAX_HEADER_BYTES or hlen > size - 8:
                raise CheckpointError(
                    f"{name} is not a valid safetensors file: its header claims {hlen} bytes but the file has {size}; it is truncated or corrupt."
                )
            raw = f.read(hlen)
    except OSError as e:
        raise CheckpointError(f"Cannot read {path}: {e.strerror or e}.") from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{name} is not a valid safetensors file: its header is not valid JSON; the file is corrupt.") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{name} is not a valid safetensors file: its header is not a JSON object.")
    data_size = size - 8 - hlen
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict):
        meta = {}
    tensors = []
    for key, entry in header.items():
        tensors.append(_tensor(name, key, entry, data_size, 8 + hlen))
    return tensors, {str(k): str(v) for k, v in meta.items()}


def _tensor(fname: str, key: str, entry: object, data_size: int, base: int) -> TensorInfo:
    bad = f"{fname} is corrupt: the header entry for tensor {key!r}"
    if not isinstance(entry, dict):
        raise CheckpointError(f"{bad} is not an object.")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        raise CheckpointError(f"{bad} has unknown dtype {dtype!r}.")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise CheckpointError(f"{bad} has an invalid shape {shape!r}.")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise CheckpointError(f"{bad} has invalid data offsets {offsets!r}.")
    if offsets[1] > data_size:
        raise CheckpointError(
            f"{fname} is truncated: tensor {key!r} ends at byte {offsets[1]} of the data but the file holds {data_size}; download it again."
        )
    nbytes = offsets[1] - offsets[0]
    expected = math.ceil(math.prod(shape) * DTYPE_BYTES[dtype])
    if nbytes != expected:
        raise CheckpointError(f"{bad} spans {nbytes} bytes but a {dtype} tensor of shape {shape} needs {expected}.")
    return TensorInfo(key, tuple(shape), dtype, nbytes, base + offsets[0])


def write_safetensors_header_only(path: str | os.PathLike, tensors: dict[str, tuple[tuple[int, ...], str]],
                                  metadata: dict[str, str] | None = None) -> int:
    """Write a safetensors file whose data region is a hole (a sparse file): real header, no data.

    Used by tests and benchmarks to make real-size checkpoints (several GB) that take no disk space.
    Returns the file size.
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = metadata
    off = 0
    for key, (shape, dtype) in tensors.items():
        n = math.ceil(math.prod(shape) * DTYPE_BYTES[dtype])
        header[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format aligns the data start to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        f.truncate(8 + len(raw) + off)
    return 8 + len(raw) + off
