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
from ..jsonfile import parse_json
from ..regular_file import open_regular
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
    with open_regular(path, "safetensors checkpoint") as f:
        size = os.fstat(f.fileno()).st_size
        try:
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
    header = parse_json(raw, f"The header of {name}", "a safetensors header", dict, fix="the file is corrupt; download it again",
                        unique_keys=True)
    data_size = size - 8 - hlen
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict):
        meta = {}
    tensors = [_tensor(name, key, entry, data_size, 8 + hlen) for key, entry in header.items()]
    _check_layout(name, tensors, data_size, 8 + hlen)
    return tensors, {str(k): str(v) for k, v in meta.items()}


def _check_layout(fname: str, tensors: list[TensorInfo], data_size: int, base: int) -> None:
    """The format's own rule (safetensors' `validate`): the tensors tile the data region exactly — no
    overlap, no duplicate range, no hole, nothing after the last one. Refusing the rest also refuses
    polyglot files and headers whose entries alias one another's bytes."""
    end = 0
    for t in sorted(tensors, key=lambda t: (t.offset, t.offset + t.nbytes)):
        start = t.offset - base
        if start != end:
            what = "overlaps the tensor before it" if start < end else f"leaves a gap of {start - end} bytes before it"
            raise CheckpointError(f"{fname} is corrupt: tensor {t.name!r} (data bytes {start}-{start + t.nbytes}) {what}; download it again.")
        end = start + t.nbytes
    if end != data_size:
        raise CheckpointError(f"{fname} is corrupt: its tensors cover {end} of the {data_size} data bytes after the header; "
                              "download it again.")


# numpy's limit on dimensions (NPY_MAXDIMS, 64 since numpy 2); no real tensor comes close.
MAX_DIMS = 64


def _short(value: object, limit: int = 60) -> str:
    """repr() cut to `limit` characters: a crafted header can hold a name or shape of megabytes."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tensor(fname: str, key: str, entry: object, data_size: int, base: int) -> TensorInfo:
    bad = f"{fname} is corrupt: the header entry for tensor {_short(key)}"
    if not isinstance(entry, dict):
        raise CheckpointError(f"{bad} is not an object.")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        raise CheckpointError(f"{bad} has unknown dtype {_short(dtype)}.")
    if (not isinstance(shape, list) or len(shape) > MAX_DIMS
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise CheckpointError(f"{bad} has an invalid shape {_short(shape)}.")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
        raise CheckpointError(f"{bad} has invalid data offsets {_short(offsets)}.")
    if offsets[1] > data_size:
        raise CheckpointError(
            f"{fname} is truncated: tensor {_short(key)} ends at byte {offsets[1]} of the data but the file holds {data_size}; download it again."
        )
    nbytes = offsets[1] - offsets[0]
    bits = round(DTYPE_BYTES[dtype] * 8)  # in integers: a huge shape must not overflow a float
    expected = (math.prod(shape) * bits + 7) // 8
    if nbytes != expected:
        raise CheckpointError(f"{bad} spans {nbytes} bytes but a {dtype} tensor of shape {_short(shape)} needs {_short(expected)}.")
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
