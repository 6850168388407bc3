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


class CudaFusedRules(TorchFunctionMode):
    """Run an SDPA call on the math kernel where CUDA's fused kernels would refuse it.

    CUDA's flash / memory-efficient / cuDNN kernels need the last dimension of query, key, value and
    attn_mask to be contiguous (stride 1); the CPU's do not. T5's per-head position bias is built by a
    permute (heads last in memory, stride 64), so on a GPU T5 silently runs the N x N math kernel —
    measured on an H100 (bench/sim_vs_cuda.py): 232 MiB of activations where the fused kernel needs 88.
    Fake tensors do not reproduce that layout (their add returns a contiguous bias), so the rule the
    simulator applies when it predicts for a GPU is on the bias itself: a float mask with one plane
    per head (dim 1 > 1) is such a bias. Padding masks (B, 1, 1, K) keep the fused kernels.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            call = dict(zip(_SDPA_ARGS, args), **kwargs)
            tensors = [call.get(k) for k in ("query", "key", "value", "attn_mask")]
            mask = tensors[3]
            per_head_bias = mask is not None and mask.is_floating_point() and mask.dim() == 4 and mask.shape[1] > 1
            if per_head_bias or any(t is not None and t.dim() > 0 and t.stride(-1) != 1 for t in tensors):
                with sdpa_kernel([SDPBackend.MATH]):
                    return func(*args, **kwargs)
        return func(*args, **kwargs)


def attention_context(kind: str, chunk: int | None = None, device_type: str = "cpu",
                      predict_cuda: bool = False) -> contextlib.AbstractContextManager:
    """Context that makes every SDPA call inside it run the planned kernel. `predict_cuda`: running
    on the CPU, choose kernels the way CUDA would (the simulator predicting for a GPU)."""
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"unknown attention kind {kind!r}")
    stack = contextlib.ExitStack()
    if kind == "sdpa":
        if device_type == "cuda":  # never fall back to the N x N math kernel silently
            stack.enter_context(sdpa_kernel(_FUSED))
        elif predict_cuda:
            stack.enter_context(CudaFusedRules())
    else:
        stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        if kind == "chunked":
            stack.enter_context(QueryChunkedAttention(chunk or 1024))
    return stack
