"""The offloading tools lowvram is measured against, each put on one module and taken off again.

Each `apply_*` makes the module run under that tool with its compute on `device`, and returns a function
that undoes it (hooks off, weights back in ordinary host memory), so several peers run one after the
other on the same random-weight module in one process (device time is scarce; building Flux again for
each would cost more than all its peers' steps).

- diffusers' `pipeline.enable_model_cpu_offload()` is, per model, `accelerate.cpu_offload_with_hook(model,
  device)` and `enable_sequential_cpu_offload()` is `accelerate.cpu_offload(model, device,
  offload_buffers=len(model._parameters) > 0)` (diffusers/pipelines/pipeline_utils.py, 0.42): the same
  calls are made here on the one module, without a pipeline around it.
- diffusers' group offloading (`diffusers.hooks.apply_group_offloading`): block level with one block per
  group, and leaf level, both with `use_stream=True` (CUDA streams; on a CPU dry run without them).
- mmgp (PyPI `mmgp`, the offloader of Wan2GP and other "GPU poor" apps): `offload.profile({"transformer":
  module}, profile)` with `quantizeTransformer=False`, so its output stays comparable bit for bit (its
  profiles quantise the transformer to int8 by default: lossy, not what lowvram's lossless rows do).
- ComfyUI's partial loading ("lowvram" mode, bench/comfy_peer.py): the one peer told the budget itself, as
  comfy's free-memory query, since it decides from it which layers stay resident.
"""

from __future__ import annotations

from typing import Callable

import torch

Undo = Callable[[], None]


def apply_model_offload(module: torch.nn.Module, device: torch.device) -> Undo:
    from accelerate import cpu_offload_with_hook
    from accelerate.hooks import remove_hook_from_module

    _, hook = cpu_offload_with_hook(module, device)

    def undo() -> None:
        hook.offload()
        remove_hook_from_module(module, recurse=True)
    return undo


def apply_sequential_offload(module: torch.nn.Module, device: torch.device) -> Undo:
    from accelerate import cpu_offload
    from accelerate.hooks import remove_hook_from_module

    cpu_offload(module, device, offload_buffers=len(module._parameters) > 0)
    return lambda: remove_hook_from_module(module, recurse=True)  # puts the weights back from its map


def apply_group_offload(module: torch.nn.Module, device: torch.device, level: str) -> Undo:
    from diffusers.hooks import apply_group_offloading

    kwargs = {"num_blocks_per_group": 1} if level == "block_level" else {}
    apply_group_offloading(module, onload_device=device, offload_device=torch.device("cpu"), offload_type=level,
                           use_stream=device.type == "cuda", **kwargs)
    return lambda: _remove_group_offload(module)


def _remove_group_offload(module: torch.nn.Module) -> None:
    # diffusers has no public "disable group offloading"; its own re-apply path
    # (hooks/group_offloading.py `_maybe_remove_and_reapply_group_offloading`) removes these hooks by name
    from diffusers.hooks.hooks import HookRegistry

    names = ("group_offloading", "layer_execution_tracker", "lazy_prefetch_group_offloading")
    for sub in module.modules():
        registry = getattr(sub, "_diffusers_hook", None)
        if isinstance(registry, HookRegistry):
            for name in names:
                if registry.get_hook(name) is not None:
                    registry.remove_hook(name, recurse=False)
    module.to("cpu")


def apply_mmgp(module: torch.nn.Module, device: torch.device, profile: int) -> Undo:
    from mmgp import offload  # imported here: optional (a wheel on the device), and it prints a banner

    default_device = torch.get_default_device()
    handle = offload.profile({"transformer": module}, profile, quantizeTransformer=False, verboseLevel=0)

    def undo() -> None:
        handle.release()
        # mmgp 3.8.2's configure ends with torch.set_default_device("cuda") and its apps run that way, so
        # it stays while mmgp is measured; afterwards it would move every later tensor of the process
        torch.set_default_device(default_device)
    return undo


def unpin_(module: torch.nn.Module) -> int:
    """Give every pinned weight a pageable copy again (what a user's freshly loaded model has), so a
    peer is not measured on memory another tool pinned before it. Returns the bytes copied."""
    moved = 0
    for t in list(module.parameters()) + list(module.buffers()):
        if t.device.type == "cpu" and t.is_pinned():
            t.data = t.data.clone()  # a plain CPU allocation: pageable
            moved += t.numel() * t.element_size()
    return moved


def pinned_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers())
               if t.device.type == "cpu" and t.is_pinned())


# Peers that pin every weight themselves (group offloading with use_stream and its default
# low_cpu_mem_usage=False: `param.data.cpu().pin_memory()`, which returns a tensor that is already pinned
# as it is). They are not given pageable copies first: their steps are the same either way, only their
# setup is shorter than from a fresh load (the row records how much was pinned already), and device time
# is not spent pinning 24 GB twice.
PIN_THEIR_OWN = {"diffusers group offload leaf (stream)", "diffusers group offload block (stream)"}

COMFY = "ComfyUI lowvram (partial load)"

# name -> apply(module, device) -> undo, in the order they are measured: fastest expected first, so a run
# cut short by its time limit still has the most telling rows; mmgp last (it may convert the module in place)
PEERS: dict[str, Callable[[torch.nn.Module, torch.device], Undo]] = {
    "diffusers group offload leaf (stream)": lambda m, d: apply_group_offload(m, d, "leaf_level"),
    "diffusers group offload block (stream)": lambda m, d: apply_group_offload(m, d, "block_level"),
    "diffusers model offload": apply_model_offload,
    "diffusers sequential offload": apply_sequential_offload,
    "mmgp HighRAM_LowVRAM (profile 2)": lambda m, d: apply_mmgp(m, d, 2),
}


def peers_at(budget_bytes: int, activation_bytes: int) -> dict[str, Callable[[torch.nn.Module, torch.device], Undo]]:
    """PEERS with ComfyUI's partial loading after group offloading (it streams layer by layer with CUDA
    streams too, so it is expected among the fast ones; model and sequential offload are known slower).
    `activation_bytes` stands in for comfy's own per-model estimate (`BaseModel.memory_required`), which
    needs comfy's model classes: the plan's activation figure for this module, batch and size."""
    def comfy(m: torch.nn.Module, d: torch.device) -> Undo:
        from comfy_peer import apply_comfy  # comfy itself is imported there, only when this row runs

        return apply_comfy(m, d, budget_bytes, activation_bytes)

    def prepare(d: torch.device) -> None:  # importing comfy (its whole model zoo) is ComfyUI's start, not a load
        from comfy_peer import import_comfy

        import_comfy(d)
    comfy.prepare = prepare
    names = list(PEERS)
    at = max(i for i, n in enumerate(names) if n.startswith("diffusers group offload")) + 1
    order = names[:at] + [COMFY] + names[at:]
    return {n: comfy if n == COMFY else PEERS[n] for n in order}
