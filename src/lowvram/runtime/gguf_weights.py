"""GGUF weights kept quantised on the device and dequantised per layer at compute time.

The torch dequantisers are diffusers' (diffusers.quantizers.gguf.utils: Q4_0 ... Q8_0, Q2_K ... Q6_K,
IQ4): they run on the GPU at memory speed. The `gguf` package's numpy dequantiser is the test oracle.
The quantised bytes are the parameter (uint8 blocks), so the streaming engine moves them as they are
stored in the file — a Q4_K Flux streams 6.5 GB per step instead of 23.8 GB.
"""

from __future__ import annotations

import gguf
import numpy as np
import torch

from .precision import dequantize_per_forward

def dequantize(raw: torch.Tensor, qtype: gguf.GGMLQuantizationType, shape: tuple[int, ...],
               dtype: torch.dtype) -> torch.Tensor:
    """Raw GGUF blocks (uint8, any device) -> a `dtype` tensor of the logical `shape`."""
    from diffusers.quantizers.gguf.utils import dequantize_functions

    if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        np_dtype = torch.float32 if qtype == gguf.GGMLQuantizationType.F32 else torch.float16
        return raw.view(np_dtype).reshape(shape).to(dtype)
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    fn = dequantize_functions.get(qtype)
    if fn is None:
        raise NotImplementedError(f"GGUF type {qtype.name} is not supported")
    blocks = raw.reshape(-1, type_size)
    out = fn(blocks, block_size, type_size, dtype=dtype)
    return out.reshape(shape).to(dtype)


def reference_dequantize(raw: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """The gguf package's own (numpy) dequantiser: the oracle the tests compare against."""
    return gguf.quants.dequantize(raw, qtype)


def _dequantize_gguf(module) -> torch.Tensor:
    qtype, shape = module._lowvram_gguf
    return dequantize(module._lowvram_stored, qtype, shape, module._lowvram_compute_dtype)


def set_gguf_weight(module: torch.nn.Linear, raw: torch.Tensor, qtype: gguf.GGMLQuantizationType,
                    compute_dtype: torch.dtype) -> None:
    """Make `module`'s weight the quantised GGUF blocks; it is dequantised for each forward."""
    shape = tuple(module.weight.shape)
    module.weight = torch.nn.Parameter(raw, requires_grad=False)
    module._lowvram_gguf = (qtype, shape)
    dequantize_per_forward(module, _dequantize_gguf, compute_dtype)
