"""Load checkpoint tensors straight into their planned precision, one tensor at a time, at disk speed.

Never a full-precision copy of the model in RAM: each tensor's destination is allocated once in its
planned dtype; a tensor already in that dtype is read (os.preadv) straight into it, one of the same width
(bf16 <-> fp16) too and cast in place, any other is read in ~4 MB chunks (2 M bf16 elements) into two
reused staging buffers — a reader thread fills the next while the cast or quantisation of the current one
runs (torch and preadv both release the GIL) — and cast into its slice of the destination. The reader
also faults in the destination's pages ahead of the cast (_fault_in). No per-chunk allocation: fresh
multi-MB buffers are new mappings whose pages fault in, which made the old per-chunk path 6x slower than
the casts themselves (docs/benchmarks.md).
Positioned reads also work for files larger than RAM + swap, where safetensors' `safe_open` (a private
copy-on-write mapping of the whole file) is refused by Linux.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import torch

from ..checkpoints.safetensors_header import read_safetensors_header
from ..checkpoints.tensors import TensorInfo
from .precision import ROW_CHUNK_ELEMENTS, STORAGE_DTYPES, PrecisionConfig, quantize_rows_into, quantize_weight

TORCH_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


def _pread(fd: int, nbytes: int, offset: int, what: str) -> bytearray:
    buf = bytearray(nbytes)
    view = memoryview(buf)
    done = 0
    while done < nbytes:
        n = os.preadv(fd, [view[done:]], offset + done)
        if n <= 0:
            raise OSError(f"unexpected end of file reading {what}")
        done += n
    return buf


def _read_into(fd: int, dest: torch.Tensor, offset: int, what: str) -> None:
    """Fill the contiguous tensor `dest` with the file's bytes at `offset` (positioned reads, no copy)."""
    view = memoryview(dest.reshape(-1).view(torch.uint8).numpy())
    done, nbytes = 0, len(view)
    while done < nbytes:
        n = os.preadv(fd, [view[done:]], offset + done)
        if n <= 0:
            raise OSError(f"unexpected end of file reading {what}")
        done += n


def read_tensor(fd: int, info: TensorInfo, rows: tuple[int, int] | None = None) -> torch.Tensor:
    """A tensor (or rows [a, b) of it) by positioned reads: no mapping of the file, no read-ahead."""
    dtype = TORCH_DTYPES[info.dtype]
    if info.nbytes == 0:
        return torch.empty(info.shape, dtype=dtype)
    shape, offset, nbytes = info.shape, info.offset, info.nbytes
    if rows is not None:
        row_bytes = info.nbytes // info.shape[0]
        shape = (rows[1] - rows[0],) + tuple(info.shape[1:])
        offset, nbytes = info.offset + rows[0] * row_bytes, (rows[1] - rows[0]) * row_bytes
    return torch.frombuffer(_pread(fd, nbytes, offset, info.name), dtype=dtype).reshape(shape)


class LazyTensor:
    """A checkpoint tensor not read yet: the loader reads it whole, row chunk by row chunk, or maps it."""

    def __init__(self, fd: int, info: TensorInfo, path: str = "") -> None:
        self.fd, self.info, self.path = fd, info, path

    def read(self, rows: tuple[int, int] | None = None) -> torch.Tensor:
        return read_tensor(self.fd, self.info, rows)

    def map(self) -> torch.Tensor:
        return map_tensor(self.path, self.info)


def map_tensor(path: str, info: TensorInfo) -> torch.Tensor:
    """The tensor as a read-only *shared* mapping of its bytes in the file: disk-backed weights.

    Pages are read on first touch and belong to the page cache, which the kernel can drop again, so a
    checkpoint larger than RAM + swap loads and runs. (A private copy-on-write mapping of the whole file —
    what safetensors' safe_open makes — is refused by Linux for such files.)"""
    import warnings

    import numpy as np

    arr = np.memmap(path, dtype=np.uint8, mode="r", offset=info.offset, shape=(info.nbytes,))
    with warnings.catch_warnings():  # torch warns that the array is not writable: it is read-only on purpose
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(arr)
    return t.view(TORCH_DTYPES[info.dtype]).reshape(info.shape)


def iter_safetensors(paths: Iterable[str]):
    """(name, LazyTensor) for every tensor of the files, one at a time."""
    for path in paths:
        infos, _ = read_safetensors_header(path)
        fd = os.open(path, os.O_RDONLY)
        try:
            for info in infos:
                yield info.name, LazyTensor(fd, info, path)
        finally:
            os.close(fd)


# Bytes per staging buffer on the path that converts: 1 M fp32 elements (precision.ROW_CHUNK_ELEMENTS),
# 2 M bf16 ones. Two buffers plus the quantiser's fp32 workspace (one chunk widened: 8 MB from bf16) are
# 16 MB in all: within the +10 % peak-RSS budget from a ~160 MB component up, and chunks this size keep
# the per-chunk overhead (torch calls, the reader handoff: well under 1 ms) small against the cast.
STAGING_BYTES = ROW_CHUNK_ELEMENTS * 4


class ChunkedReader:
    """Reads tensors' bytes in chunks into two reused staging buffers, one chunk ahead on a thread.

    One per `load_into` call (it owns the thread and the buffers; `close` ends the thread): the
    buffers are what lets the converting path run without allocating per chunk."""

    def __init__(self, chunk_bytes: int) -> None:
        self.chunk_bytes = chunk_bytes
        self.buffers: list[torch.Tensor] = []
        self.work: torch.Tensor | None = None
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lowvram-read")

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def workspace(self, elements: int) -> torch.Tensor:
        """A flat fp32 buffer of at least `elements`, the same one for every tensor (the quantiser's)."""
        if self.work is None or self.work.numel() < elements:
            self.work = torch.empty(elements, dtype=torch.float32)
        return self.work

    def chunks(self, fd: int, offset: int, nbytes: int, what: str, chunk_bytes: int = 0,
               dest: torch.Tensor | None = None, in_place: bool = False) -> Iterator[torch.Tensor]:
        """uint8 views of the bytes [offset, offset + nbytes) in order, `chunk_bytes` (<= the reader's; by
        default the reader's) at a time, each valid until the next one is asked for. `dest`: the tensor the
        chunks are converted into, in the same order and proportion: the reader thread faults in its pages
        for each chunk as it reads it (see _fault_in). `in_place` (dest as wide as the file's dtype): each
        chunk is read into its own bytes of `dest` instead of a staging buffer, to be cast there."""
        chunk_bytes = chunk_bytes or self.chunk_bytes
        if chunk_bytes > self.chunk_bytes:
            raise ValueError(f"chunks of {chunk_bytes} bytes do not fit staging buffers of {self.chunk_bytes}")
        if not self.buffers:
            self.buffers = [torch.empty(self.chunk_bytes, dtype=torch.uint8) for _ in range(2)]
        spans = [(a, min(nbytes, a + chunk_bytes)) for a in range(0, nbytes, chunk_bytes)]
        dest_bytes = dest.reshape(-1).view(torch.uint8) if in_place else None

        def read(i: int):
            a, b = spans[i]
            if in_place:  # preadv maps the destination's pages as it fills them
                buf = dest_bytes[a:b]
            else:
                buf = self.buffers[i % 2][: b - a]
            _read_into(fd, buf, offset + a, what)
            if dest is not None and not in_place:
                _fault_in(dest, a * dest.nbytes // nbytes, b * dest.nbytes // nbytes)
            return buf

        pending = self.pool.submit(read, 0) if spans else None
        for i in range(len(spans)):
            buf = pending.result()
            # the buffer the next read fills was handed out two chunks ago: its consumer is done with it
            pending = self.pool.submit(read, i + 1) if i + 1 < len(spans) else None
            yield buf


def _fault_in(dest: torch.Tensor, a: int, b: int) -> None:
    """Touch bytes [a, b) of the fresh tensor `dest` (its memory is about to be overwritten) so the
    kernel maps their pages here, on the reader thread, overlapped with the cast of the previous chunk.

    A fresh destination's page faults cost twice the cast itself (measured: 32 MB bf16 -> fp16 takes
    11.5 ms into memory already mapped, 33 ms into fresh memory), and torch's intra-op threads faulting
    pages of one mapping at once contend on the kernel's per-process memory lock (2 threads: 4x slower).
    One byte per page is written, not the whole range: the fault is what costs, and a memset's extra
    write pass made fp32 loads ~10 % slower. torch releases the GIL for the fill, so the faults run beside
    the main thread's cast. (madvise's MADV_POPULATE_WRITE maps pages without a trap each, but beside
    the cast it made one 2 GB fp32 load in four 3-4x slower: docs/benchmarks.md.)"""
    if b > a:
        dest.reshape(-1).view(torch.uint8)[a:b:4096].fill_(0)


def read_as(t: LazyTensor, dtype: torch.dtype, reader: ChunkedReader) -> torch.Tensor:
    """The tensor in `dtype`, bit-identical to `t.read().to(dtype)`: read straight into its destination
    when the file already stores `dtype`; bf16 <-> fp16 read into the destination too, each chunk then
    cast in place (an elementwise cast of a tensor onto its own bytes: every element is read before it is
    written); wider or narrower dtypes cast chunk by chunk from the staging buffers."""
    info, src = t.info, TORCH_DTYPES[t.info.dtype]
    out = torch.empty(info.shape, dtype=dtype)
    if info.nbytes == 0:
        return out
    if src == dtype:
        _read_into(t.fd, out, info.offset, info.name)
        return out
    flat, size = out.view(-1), src.itemsize
    step = reader.chunk_bytes // size
    in_place = size == dtype.itemsize  # bf16 <-> fp16: read into the destination, cast there
    for i, raw in enumerate(reader.chunks(t.fd, info.offset, info.nbytes, info.name, dest=out, in_place=in_place)):
        flat[i * step: i * step + raw.numel() // size].copy_(raw.view(src))
    return out


def _quantise_lazy(t: "LazyTensor | torch.Tensor", storage: str,
                   reader: ChunkedReader | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """8-bit weight and scales, reading the source rows in chunks (peak: the 8-bit tensor + one chunk)."""
    if isinstance(t, torch.Tensor):
        return quantize_weight(t, storage)
    rows_total, cols = t.info.shape
    src = TORCH_DTYPES[t.info.dtype]
    q = torch.empty((rows_total, cols), dtype=STORAGE_DTYPES[storage])
    scale = torch.empty(rows_total, dtype=torch.float32)
    # as many rows as fill a staging buffer (2 M bf16 elements): half the per-chunk overhead of the
    # in-memory quantiser's 1 M, for a workspace of 8 MB
    step = max(1, (reader.chunk_bytes // src.itemsize if reader is not None else ROW_CHUNK_ELEMENTS) // max(1, cols))
    if reader is None or step * cols * src.itemsize > reader.chunk_bytes or t.info.nbytes == 0:
        for a in range(0, rows_total, step):  # rows wider than a chunk: one row block at a time
            b = min(rows_total, a + step)
            q[a:b], scale[a:b] = quantize_weight(t.read((a, b)), storage)
        return q, scale
    work = reader.workspace(min(rows_total, step) * cols)
    row_bytes = t.info.nbytes // rows_total
    for i, raw in enumerate(reader.chunks(t.fd, t.info.offset, t.info.nbytes, t.info.name, step * row_bytes, dest=q)):
        a = i * step
        b = a + raw.numel() // row_bytes
        quantize_rows_into(raw.view(src).view(b - a, cols), q[a:b], scale[a:b], storage, work)
    return q, scale


def prepare_precision(module: torch.nn.Module, config: PrecisionConfig | None) -> set[str]:
    """On a meta module: make Linear weights 8-bit parameters with scale buffers and dequant hooks.
    Returns the names of the 8-bit weights (the loader quantises those tensors as it reads them)."""
    if config is None:
        return set()
    from .precision import apply_weight_precision

    apply_weight_precision(module, config)  # on meta tensors: only shapes and dtypes change
    return {f"{n}.weight" for n, m in module.named_modules() if hasattr(m, "weight_scale")}


_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


@functools.cache
def _fix_malloc_threshold() -> None:
    """Make glibc serve every buffer above 1 MB with its own mapping, returned to the OS when freed.

    By default glibc raises its mmap threshold after the first large free, after which the loader's
    per-tensor buffers come from the heap and fragment it: a 3 GB checkpoint loaded into fp8 then
    peaked at twice the fp8 size. Pinning the threshold keeps the peak at the 8-bit model plus one chunk.
    Once per process (cached): it is a process-wide setting.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def load_into(module: torch.nn.Module, tensors: Iterable[tuple[str, "LazyTensor | torch.Tensor"]], compute_dtype: torch.dtype,
              precision: PrecisionConfig | None = None, key_map: Callable[[str], str | None] | None = None,
              disk_backed: bool = False) -> dict:
    """Assign checkpoint tensors to a (meta-built) module; returns {"missing": [...], "unexpected": [...]}.

    Linear weights named by `prepare_precision` are quantised per tensor as they arrive; everything
    floating else is cast to the compute dtype. `disk_backed`: tensors already in the compute dtype are
    mapped from the file instead of read (the plan's "disk" source, for checkpoints larger than RAM).
    """
    _fix_malloc_threshold()
    quantised = prepare_precision(module, precision)
    expected = dict(module.state_dict(keep_vars=True))
    loaded, unexpected = set(), []
    reader = ChunkedReader(STAGING_BYTES)
    try:
        for stored_name, t in tensors:
            name = key_map(stored_name) if key_map else stored_name
            if name is None or name not in expected:
                unexpected.append(stored_name)
                continue
            if name in quantised:
                q, scale = _quantise_lazy(t, precision.storage, reader)
                _assign(module, name, q)
                _assign(module, name[: -len("weight")] + "weight_scale", scale.to(compute_dtype))
                loaded.add(name[: -len("weight")] + "weight_scale")
            elif disk_backed and isinstance(t, LazyTensor) and TORCH_DTYPES.get(t.info.dtype) == compute_dtype:
                _assign(module, name, t.map())
            elif isinstance(t, LazyTensor):
                stored = TORCH_DTYPES[t.info.dtype]
                _assign(module, name, read_as(t, compute_dtype if stored.is_floating_point else stored, reader))
            else:
                _assign(module, name, t.to(compute_dtype) if t.is_floating_point() else t.clone())
            loaded.add(name)
            del t
    finally:
        reader.close()
    missing = [k for k in expected if k not in loaded]
    return {"missing": missing, "unexpected": unexpected}


def _assign(module: torch.nn.Module, name: str, value: torch.Tensor) -> None:
    path, _, leaf = name.rpartition(".")
    owner = module.get_submodule(path) if path else module
    if leaf in owner._parameters:
        owner._parameters[leaf] = torch.nn.Parameter(value, requires_grad=False)
    else:
        owner._buffers[leaf] = value
