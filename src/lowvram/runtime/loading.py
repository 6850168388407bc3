"""Load checkpoint tensors straight into their planned precision, one tensor at a time.

Never a full-precision copy of the model in RAM: each tensor is read with a positioned read (os.pread)
into a buffer of its own size, converted (cast, or quantised to 8 bits) and assigned, and the buffer is
dropped. Positioned reads also work for files larger than RAM + swap, where safetensors' `safe_open`
(a private copy-on-write mapping of the whole file) is refused by Linux.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable

import torch

from ..checkpoints.safetensors_header import read_safetensors_header
from ..checkpoints.tensors import TensorInfo
from .precision import PrecisionConfig, quantize_weight

TORCH_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


def read_tensor(fd: int, info: TensorInfo) -> torch.Tensor:
    """One tensor's bytes by positioned reads (no mapping of the file, no read-ahead of the rest)."""
    buf = bytearray(info.nbytes)
    view = memoryview(buf)
    done = 0
    while done < info.nbytes:
        n = os.preadv(fd, [view[done:]], info.offset + done)
        if n <= 0:
            raise OSError(f"unexpected end of file reading {info.name}")
        done += n
    if info.nbytes == 0:
        return torch.empty(info.shape, dtype=TORCH_DTYPES[info.dtype])
    return torch.frombuffer(buf, dtype=TORCH_DTYPES[info.dtype]).reshape(info.shape)


def iter_safetensors(paths: Iterable[str]):
    """(info, tensor) for every tensor of the files, read one at a time."""
    for path in paths:
        infos, _ = read_safetensors_header(path)
        fd = os.open(path, os.O_RDONLY)
        try:
            for info in infos:
                yield info, read_tensor(fd, info)
        finally:
            os.close(fd)


def prepare_precision(module: torch.nn.Module, config: PrecisionConfig | None) -> set[str]:
    """On a meta module: make Linear weights 8-bit parameters with scale buffers and dequant hooks.
    Returns the names of the 8-bit weights (the loader quantises those tensors as it reads them)."""
    if config is None:
        return set()
    from .precision import apply_weight_precision

    apply_weight_precision(module, config)  # on meta tensors: only shapes and dtypes change
    return {f"{n}.weight" for n, m in module.named_modules() if hasattr(m, "weight_scale")}


def load_into(module: torch.nn.Module, tensors: Iterable[tuple[TensorInfo, torch.Tensor]], compute_dtype: torch.dtype,
              precision: PrecisionConfig | None = None, key_map: Callable[[str], str | None] | None = None) -> dict:
    """Assign checkpoint tensors to a (meta-built) module; returns {"missing": [...], "unexpected": [...]}.

    Linear weights named by `prepare_precision` are quantised per tensor as they arrive; everything
    floating else is cast to the compute dtype.
    """
    quantised = prepare_precision(module, precision)
    expected = dict(module.state_dict(keep_vars=True))
    loaded, unexpected = set(), []
    for info, t in tensors:
        name = key_map(info.name) if key_map else info.name
        if name is None or name not in expected:
            unexpected.append(info.name)
            continue
        if name in quantised:
            q, scale = quantize_weight(t, precision.storage)
            _assign(module, name, q)
            _assign(module, name[: -len("weight")] + "weight_scale", scale.to(compute_dtype))
            loaded.add(name[: -len("weight")] + "weight_scale")
        else:
            _assign(module, name, t.to(compute_dtype) if t.is_floating_point() else t.clone())
        loaded.add(name)
        del t
    missing = [k for k in expected if k not in loaded]
    return {"missing": missing, "unexpected": unexpected}


def _assign(module: torch.nn.Module, name: str, value: torch.Tensor) -> None:
    path, _, leaf = name.rpartition(".")
    owner = module.get_submodule(path) if path else module
    if leaf in owner._parameters:
        owner._parameters[leaf] = torch.nn.Parameter(value, requires_grad=False)
    else:
        owner._buffers[leaf] = value
