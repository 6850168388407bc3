"""Attention kernel selection, including query-chunked attention, for any model code.

Model code (diffusers / transformers) calls `F.scaled_dot_product_attention`; we choose the kernel
around that call instead of swapping attention processors, so one mechanism covers every model:
- "sdpa": the fused kernels (flash / memory-efficient / cuDNN on CUDA): no N x N matrix is stored;
- "math": the reference kernel that materialises the N x N scores (what old cards and CPUs run);
- "chunked": the math kernel over slices of the queries, so only chunk x N scores exist at once.
The simulator runs the same contexts on fake tensors, so it counts exactly what will run.
"""

from __future__ import annotations

import contextlib

import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

ATTENTION_KINDS = ("sdpa", "math", "chunked")
_FUSED = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]


class QueryChunkedAttention(TorchFunctionMode):
    """Split every SDPA call along the query axis into chunks of at most `chunk` queries."""

    def __init__(self, chunk: int) -> None:
        super().__init__()
        if chunk <= 0:
            raise ValueError("chunk must be positive")
        self.chunk = chunk

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        call = dict(zip(_SDPA_ARGS, args), **kwargs)  # callers pass positionally or by keyword
        q, k, v = call.pop("query"), call.pop("key"), call.pop("value")
        mask = call.pop("attn_mask", None)
        n = q.shape[-2]
        if n <= self.chunk or call.get("is_causal"):
            return func(q, k, v, attn_mask=mask, **call)
        out = None
        for i in range(0, n, self.chunk):
            m = mask
            if m is not None and m.dim() >= 2 and m.shape[-2] == n:
                m = m[..., i:i + self.chunk, :]
            part = func(q[..., i:i + self.chunk, :], k, v, attn_mask=m, **call)
            if out is None:
                out = part.new_empty(part.shape[:-2] + (n, part.shape[-1]))
            out[..., i:i + self.chunk, :] = part
            del part
        return out


_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


def attention_context(kind: str, chunk: int | None = None, device_type: str = "cpu") -> contextlib.AbstractContextManager:
    """Context that makes every SDPA call inside it run the planned kernel."""
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"unknown attention kind {kind!r}")
    stack = contextlib.ExitStack()
    if kind == "sdpa":
        if device_type == "cuda":  # never fall back to the N x N math kernel silently
            stack.enter_context(sdpa_kernel(_FUSED))
    else:
        stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        if kind == "chunked":
            stack.enter_context(QueryChunkedAttention(chunk or 1024))
    return stack
