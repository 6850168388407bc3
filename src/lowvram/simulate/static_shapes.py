"""Make data-dependent model code shape-static so it runs on fake tensors (HiDream-I1).

Two places in diffusers' HiDream read tensor *values*: the MoE router and the patch-grid sizes.

Mixture of experts:
A routed MoE picks experts from the data (argsort/bincount of the router's choices), which a fake
tensor has none of. For the simulation we route tokens uniformly — each expert gets tokens x top-k /
experts — and otherwise allocate what diffusers' `moe_infer` allocates (the gather, the expert MLP,
the scatter into a full-size cache). Real routing is uneven; the difference is one expert's MLP
activations on a few hundred tokens, small next to the block's attention and the stored weights.
"""

from __future__ import annotations

import contextlib
import types

import torch


def _uniform_moe_infer(self, x, flat_expert_indices, flat_expert_weights):
    expert_cache = torch.zeros_like(x)
    idxs = flat_expert_indices.argsort()
    n_routed = flat_expert_indices.shape[0]
    per_expert = -(-n_routed // len(self.experts))
    for i, expert in enumerate(self.experts):
        start = min(i * per_expert, n_routed)
        end = min(start + per_expert, n_routed)
        if start == end:
            continue
        exp_token_idx = idxs[start:end] // self.num_activated_experts
        expert_out = expert(x[exp_token_idx])
        expert_out.mul_(flat_expert_weights[idxs[start:end]])
        expert_cache = expert_cache.to(expert_out.dtype)
        expert_cache.scatter_reduce_(0, exp_token_idx.view(-1, 1).repeat(1, x.shape[-1]), expert_out, reduce="sum")
    return expert_cache


def _static_patchify(self, hidden_states):
    """HiDream's patchify returns the patch grid as a tensor that unpatchify reads with `.item()`;
    give the same grid as Python ints (the shapes determine it)."""
    out = type(self).patchify(self, hidden_states)
    p = self.config.patch_size
    b, _, h, w = hidden_states.shape
    return out[0], out[1], [(h // p, w // p)] * b, out[3]


@contextlib.contextmanager
def static_shapes(module: torch.nn.Module):
    """Within the context, MoE layers route uniformly and HiDream's patch grid is static."""
    patched = []
    for m in module.modules():
        if hasattr(m, "moe_infer") and hasattr(m, "experts"):
            m.moe_infer = types.MethodType(_uniform_moe_infer, m)
            patched.append((m, "moe_infer"))
        if type(m).__name__ == "HiDreamImageTransformer2DModel":
            m.patchify = types.MethodType(_static_patchify, m)
            patched.append((m, "patchify"))
    try:
        yield
    finally:
        for m, name in patched:
            delattr(m, name)
