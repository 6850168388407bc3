"""Read a GGUF file's metadata and tensor table (names, shapes, quantisation types) — no data.

The header is parsed here in one pass of positioned reads, each declared count and length bounded by
the bytes left in the file before it is used (the `gguf` package's reader trusts them: a metadata array
claiming 2**63 items past the end of the file makes it loop and allocate without end). Tensor data is
never touched. Every damage ends in one sentence naming the file. The `gguf` package supplies the
quantisation types and their block sizes.
"""

from __future__ import annotations

import os
import struct

from ..errors import CheckpointError
from ..regular_file import open_regular
from .tensors import TensorInfo

GGUF_MAGIC = b"GGUF"
# GGUF versions the `gguf` reader parses (gguf_reader.READER_SUPPORTED_VERSIONS).
SUPPORTED_VERSIONS = (2, 3)
# ggml's GGML_MAX_DIMS: a GGUF tensor has at most 4 dimensions.
MAX_DIMS = 4
# Reading builds one Python object per metadata array item: the largest arrays real GGUF files hold
# are tokenizer vocabularies and merges of text encoders (~150k-260k items); 2**20 bounds the time a
# file can make us spend while leaving four times that room.
MAX_ARRAY_ITEMS = 2**20
# Metadata arrays of arrays: real files nest none; reading recurses once per level.
MAX_ARRAY_NESTING = 4
# Value type ids of the GGUF spec -> struct format of the scalar (gguf.GGUFValueType).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY, _UINT32 = 8, 9, 4
# The spec's data alignment when the file sets no `general.alignment` (gguf.GGUF_DEFAULT_ALIGNMENT).
DEFAULT_ALIGNMENT = 32
# Names the gguf reader gives its own fields (version and counts): not metadata, and no key may take them.
_RESERVED_KEYS = ("GGUF.version", "GGUF.tensor_count", "GGUF.kv_count")
# A metadata value whose text is not UTF-8: the key is left out of the metadata, the file is still read.
_UNDECODABLE = object()


def read_gguf_header(path: str | os.PathLike) -> tuple[list[TensorInfo], dict[str, object]]:
    path = os.fspath(path)
    name = os.path.basename(path)
    with open_regular(path, "GGUF file") as f:
        size = os.fstat(f.fileno()).st_size
        try:
            magic = f.read(4)
            if magic != GGUF_MAGIC:
                raise CheckpointError(f"{name} is not a GGUF file (bad magic {magic[:4]!r}); it is corrupt or has the wrong extension.")
            tensors, meta = _HeaderWalk(f, size, name).walk()
        except OSError as e:
            raise CheckpointError(f"Cannot read {path}: {e.strerror or e}.") from None
    for t in tensors:
        if t.offset + t.nbytes > size:
            raise CheckpointError(f"{name} is truncated: tensor {t.name[:60]!r} ends past the end of the file; download it again.")
    _check_no_overlap(name, tensors)
    return tensors, meta


def _check_no_overlap(fname: str, tensors: list[TensorInfo]) -> None:
    """Two tensors sharing bytes is a crafted or damaged table (writers lay them out one after another)."""
    end, prev = 0, None
    for t in sorted(tensors, key=lambda t: (t.offset, t.nbytes)):
        if t.nbytes and t.offset < end:
            raise CheckpointError(f"{fname} is corrupt: tensors {prev!r} and {t.name[:60]!r} share bytes; download it again.")
        if t.offset + t.nbytes > end:
            end, prev = t.offset + t.nbytes, t.name[:60]


class _HeaderWalk:
    """Parses the header (after the magic), checking each declared size against the bytes left before
    using it; hand-written because neither the `gguf` reader nor ggml's C loader bounds them before use
    in a form we can call."""

    def __init__(self, f, size: int, name: str) -> None:
        self.f, self.size, self.name, self.pos, self.order = f, size, name, 4, "<"

    def fail(self, what: str) -> CheckpointError:
        return CheckpointError(f"{self.name} has a damaged GGUF header: {what} (file of {self.size} bytes); download it again.")

    def left(self) -> int:
        return self.size - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.left():
            raise self.fail(f"{what} runs past the end of the file")
        data = self.f.read(n)
        if len(data) != n:
            raise self.fail(f"{what} runs past the end of the file")
        self.pos += n
        return data

    def unpack(self, fmt: str, what: str):
        return struct.unpack(self.order + fmt, self.take(struct.calcsize(fmt), what))[0]

    def count(self, declared: int, min_item: int, what: str) -> int:
        if declared * min_item > self.left():
            raise self.fail(f"{what} declares {declared} items, more than the {self.left()} bytes left can hold")
        return declared

    def string(self, what: str) -> bytes:
        n = self.unpack("Q", f"the length of {what}")
        return self.take(self.count(n, 1, what), what)

    def text(self, what: str) -> str:
        """A string the file cannot do without (a key, a tensor name): not UTF-8 is damage."""
        raw = self.string(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} {raw[:60]!r} is not UTF-8") from None

    def walk(self) -> tuple[list[TensorInfo], dict[str, object]]:
        """The tensor table (offsets from the start of the file) and the metadata."""
        raw = self.take(4, "the version")
        version = struct.unpack("<I", raw)[0]
        if version & 0xFFFF == 0:  # written on a big-endian machine (as the gguf reader detects it)
            self.order, version = ">", struct.unpack(">I", raw)[0]
        if version not in SUPPORTED_VERSIONS:
            raise self.fail(f"version {version} is not one lowvram reads ({', '.join(map(str, SUPPORTED_VERSIONS))})")
        n_tensors = self.unpack("Q", "the tensor count")
        n_kv = self.unpack("Q", "the metadata count")
        # smallest entries: a key of 0 bytes + type + 1-byte value; a tensor of 0-byte name, 0 dims, type, offset
        self.count(n_kv, 8 + 4 + 1, "the metadata")
        self.count(n_tensors, 8 + 4 + 4 + 8, "the tensor table")
        meta: dict[str, object] = {}
        keys = set(_RESERVED_KEYS)
        alignment = DEFAULT_ALIGNMENT
        for _ in range(n_kv):
            key = self.text("a metadata key")
            if key in keys:
                raise self.fail(f"metadata key {key[:60]!r} appears twice")
            keys.add(key)
            short = key[:60]
            vtype = self.unpack("I", f"the type of {short!r}")
            value = self.value(vtype, short, 0)
            if key == "general.alignment":
                if vtype != _UINT32 or value == 0 or value & (value - 1):
                    raise self.fail("general.alignment is not a power of two stored as uint32")
                alignment = value
            if value is not _UNDECODABLE and not key.startswith("GGUF."):
                meta[key] = value
        import gguf

        table = []
        names: set[str] = set()
        for _ in range(n_tensors):
            tname = self.text("a tensor name")
            short = tname[:60]
            if tname in names:
                raise self.fail(f"tensor {short!r} appears twice")
            names.add(tname)
            n_dims = self.unpack("I", f"the rank of tensor {short!r}")
            if n_dims > MAX_DIMS:
                raise self.fail(f"tensor {short!r} has {n_dims} dimensions, more than GGUF's {MAX_DIMS}")
            dims = [self.unpack("Q", f"the shape of tensor {short!r}") for _ in range(n_dims)]
            qtype = self.unpack("I", f"the type of tensor {short!r}")
            try:
                quant = gguf.GGMLQuantizationType(qtype)
                block, type_size = gguf.GGML_QUANT_SIZES[quant]
            except (ValueError, KeyError):
                raise self.fail(f"tensor {short!r} has unknown type {qtype}") from None
            n = 1
            for d in dims:
                n *= d
            # quantised rows (the innermost dimension, listed first) hold whole blocks
            if (block > 1 and (not dims or dims[0] % block)) or n // block * type_size > self.size:
                raise self.fail(f"tensor {short!r} of shape {dims[:MAX_DIMS]} cannot be stored in this file")
            offset = self.unpack("Q", f"the offset of tensor {short!r}")
            shape = tuple(reversed(dims))  # GGUF lists dims innermost first
            table.append((tname, shape, quant.name, n // block * type_size, offset))
        data_start = -(-self.pos // alignment) * alignment  # the data region starts at the next aligned byte
        return [TensorInfo(t, shape, q, nbytes, data_start + off) for t, shape, q, nbytes, off in table], meta

    def value(self, vtype: int, key: str, depth: int) -> object:
        """The value, as the gguf reader's `contents()` gives it (arrays of arrays flattened)."""
        if vtype in _SCALARS:
            fmt = _SCALARS[vtype]
            return self.unpack(fmt, f"the value of {key!r}")
        if vtype == _STRING:
            try:
                return self.string(f"the value of {key!r}").decode("utf-8")
            except UnicodeDecodeError:
                return _UNDECODABLE
        if vtype == _ARRAY:
            if depth >= MAX_ARRAY_NESTING:
                raise self.fail(f"{key!r} nests arrays deeper than {MAX_ARRAY_NESTING} levels")
            itype = self.unpack("I", f"the item type of {key!r}")
            n = self.unpack("Q", f"the length of {key!r}")
            if n > MAX_ARRAY_ITEMS:
                raise self.fail(f"{key!r} declares {n} items, more than the {MAX_ARRAY_ITEMS} lowvram reads")
            if itype in _SCALARS:  # fixed-size items: checked and read in one step
                fmt = _SCALARS[itype]
                raw = self.take(self.count(n, struct.calcsize(fmt), f"{key!r}") * struct.calcsize(fmt), f"the value of {key!r}")
                return list(struct.unpack(f"{self.order}{n}{fmt}", raw))
            self.count(n, 8 if itype == _STRING else 12, f"{key!r}")
            items: list = []
            bad = False
            for _ in range(n):
                item = self.value(itype, key, depth + 1)
                if item is _UNDECODABLE:
                    bad = True
                elif itype == _ARRAY:
                    items.extend(item)
                else:
                    items.append(item)
            return _UNDECODABLE if bad else items
        raise self.fail(f"{key!r} has unknown value type {vtype}")
