"""Read a GGUF file's metadata and tensor table (names, shapes, quantisation types) — no data.

Uses the `gguf` package's reader, which memory-maps the file read-only and parses only the header;
tensor data pages are never touched. The reader trusts every count and length the file declares (a
metadata array claiming 2**63 items past the end of the file makes it loop and allocate without end),
so the header is first walked here with each declared count and length bounded by the bytes left in
the file — the reader only ever sees a header whose sizes are possible. We add the checks that turn
its exceptions into one sentence.
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
# The reader builds one Python object per metadata array item: the largest arrays real GGUF files hold
# are tokenizer vocabularies and merges of text encoders (~150k-260k items); 2**20 bounds the time a
# file can make the reader spend while leaving four times that room.
MAX_ARRAY_ITEMS = 2**20
# Metadata arrays of arrays: real files nest none; the reader recurses once per level.
MAX_ARRAY_NESTING = 4
# Value type ids of the GGUF spec -> struct format of the scalar (gguf.GGUFValueType).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


def read_gguf_header(path: str | os.PathLike) -> tuple[list[TensorInfo], dict[str, object]]:
    path = os.fspath(path)
    name = os.path.basename(path)
    with open_regular(path, "GGUF file") as f:
        size = os.fstat(f.fileno()).st_size
        try:
            magic = f.read(4)
            if magic != GGUF_MAGIC:
                raise CheckpointError(f"{name} is not a GGUF file (bad magic {magic[:4]!r}); it is corrupt or has the wrong extension.")
            declared = _HeaderWalk(f, size, name).walk()
        except OSError as e:
            raise CheckpointError(f"Cannot read {path}: {e.strerror or e}.") from None
    import gguf

    try:
        reader = gguf.GGUFReader(path, "r")
    except Exception as e:  # the reader raises ValueError/IndexError/KeyError/struct errors on damage
        raise CheckpointError(f"{name} has a damaged GGUF header or tensor table ({type(e).__name__}: {str(e)[:100]}); "
                              "download it again.") from None
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
            raise CheckpointError(f"{name} is truncated: tensor {t.name[:60]!r} ends past the end of the file; download it again.")
        tensors.append(TensorInfo(t.name, shape, qtype, nbytes, offset))
    if len(tensors) != declared:
        raise CheckpointError(f"{name} has a damaged GGUF tensor table; download it again.")
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
    """Walks the header (after the magic) checking each declared size against the bytes left; hand-written
    because neither the `gguf` reader nor ggml's C loader bounds them before use in a form we can call."""

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

    def skip(self, n: int, what: str) -> None:
        if n > self.left():
            raise self.fail(f"{what} runs past the end of the file")
        self.pos += n
        self.f.seek(self.pos)

    def unpack(self, fmt: str, what: str):
        return struct.unpack(self.order + fmt, self.take(struct.calcsize(fmt), what))[0]

    def count(self, declared: int, min_item: int, what: str) -> int:
        if declared * min_item > self.left():
            raise self.fail(f"{what} declares {declared} items, more than the {self.left()} bytes left can hold")
        return declared

    def string(self, what: str) -> bytes:
        n = self.unpack("Q", f"the length of {what}")
        return self.take(self.count(n, 1, what), what)

    def walk(self) -> int:
        """Checks the whole header; returns the number of tensors it declares."""
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
        for _ in range(n_kv):
            key = self.string("a metadata key")[:60].decode("utf-8", "replace")
            self.value(self.unpack("I", f"the type of {key!r}"), key, 0)
        import gguf

        for _ in range(n_tensors):
            tname = self.string("a tensor name")[:60].decode("utf-8", "replace")
            n_dims = self.unpack("I", f"the rank of tensor {tname!r}")
            if n_dims > MAX_DIMS:
                raise self.fail(f"tensor {tname!r} has {n_dims} dimensions, more than GGUF's {MAX_DIMS}")
            dims = [self.unpack("Q", f"the shape of tensor {tname!r}") for _ in range(n_dims)]
            qtype = self.unpack("I", f"the type of tensor {tname!r}")
            try:
                block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(qtype)]
            except (ValueError, KeyError):
                raise self.fail(f"tensor {tname!r} has unknown type {qtype}") from None
            n = 1
            for d in dims:
                n *= d
            if n % block or n // block * type_size > self.size:
                raise self.fail(f"tensor {tname!r} of shape {dims[:MAX_DIMS]} cannot be stored in this file")
            self.unpack("Q", f"the offset of tensor {tname!r}")
        return n_tensors

    def value(self, vtype: int, key: str, depth: int) -> None:
        if vtype in _SCALARS:
            self.skip(struct.calcsize(_SCALARS[vtype]), f"the value of {key!r}")
        elif vtype == _STRING:
            self.string(f"the value of {key!r}")
        elif vtype == _ARRAY:
            if depth >= MAX_ARRAY_NESTING:
                raise self.fail(f"{key!r} nests arrays deeper than {MAX_ARRAY_NESTING} levels")
            itype = self.unpack("I", f"the item type of {key!r}")
            n = self.unpack("Q", f"the length of {key!r}")
            if n > MAX_ARRAY_ITEMS:
                raise self.fail(f"{key!r} declares {n} items, more than the {MAX_ARRAY_ITEMS} lowvram reads")
            if itype in _SCALARS:  # fixed-size items: checked and skipped in one step
                item = struct.calcsize(_SCALARS[itype])
                self.skip(self.count(n, item, f"{key!r}") * item, f"the value of {key!r}")
                return
            self.count(n, 8 if itype == _STRING else 12, f"{key!r}")
            for _ in range(n):
                self.value(itype, key, depth + 1)
        else:
            raise self.fail(f"{key!r} has unknown value type {vtype}")
