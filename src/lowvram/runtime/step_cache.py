"""Step caching: skip all blocks but the first in a denoising step whose first block barely changed.

First-block caching (ParaAttention's "First Block Cache", after TeaCache): each step runs the first
transformer block; when the relative mean change of its residual since the last fully computed step is
below `threshold`, the remaining blocks are skipped and their residual from that step is added instead.
Lossy and opt-in (`--quality fast --step-cache THRESHOLD`); threshold 0 never skips.

The caching itself is diffusers' (`diffusers.hooks.apply_first_block_cache`), not ours. This file adds
what lowvram needs around it:
- a cache context for pipelines that set none (diffusers' hooks need one; only some pipelines, Flux and
  Qwen-Image among ours, wrap their denoiser calls in `cache_context`);
- a reset when a new image begins (the timestep goes up), so one image never reuses another's residuals;
- counts of computed and skipped calls, for the report;
- removal by handle (every hook it adds comes off in `remove`).
Composed with streaming: a skipped block's forward is still *called* (diffusers' hook returns its inputs),
so `skips(module)` tells the streaming engine, once the first block has decided, which units it need not
copy (runtime/streaming.py `skip_unit`): a cached step copies only what runs outside the skipped blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UserError

# diffusers' names for the hooks apply_first_block_cache registers (diffusers/hooks/first_block_cache.py);
# private there, needed to take them off again.
_FBC_HOOK_NAMES = ("fbc_leader_block_hook", "fbc_block_hook")
# The context name lowvram sets around a denoiser call when the pipeline sets none.
_OWN_CONTEXT = "lowvram"


@dataclass(frozen=True)
class StepCacheConfig:
    threshold: float  # relative mean change of the first block's residual below which a step is cached

    def __post_init__(self) -> None:
        if not (self.threshold >= 0.0):  # also rejects NaN
            raise ValueError(f"step cache threshold {self.threshold!r} must be >= 0")


@dataclass
class StepCacheStats:
    calls: int = 0  # denoiser calls seen
    computed: int = 0  # calls that ran every block

    @property
    def skipped(self) -> int:
        return self.calls - self.computed

    @property
    def skip_ratio(self) -> float:
        return self.skipped / self.calls if self.calls else 0.0


def cached_blocks(denoiser: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The blocks diffusers' first-block cache would hook, in order; [] when it cannot (a UNet: its blocks
    are not a flat list of transformer blocks, and its skip connections leave no single residual)."""
    from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS
    from diffusers.hooks._helpers import TransformerBlockRegistry

    blocks = [(f"{name}.{i}", b) for name, child in denoiser.named_children()
              if name in _ALL_TRANSFORMER_BLOCK_IDENTIFIERS and isinstance(child, torch.nn.ModuleList)
              for i, b in enumerate(child)]
    try:
        for _, b in blocks:
            TransformerBlockRegistry.get(type(b))
    except ValueError:  # a block class diffusers has no metadata for
        return []
    return blocks if len(blocks) >= 2 else []


class StepCache:
    """Apply with `cache = StepCache(denoiser, StepCacheConfig(0.1)).apply()`; `cache.stats` counts steps."""

    def __init__(self, denoiser: torch.nn.Module, config: StepCacheConfig) -> None:
        self.denoiser = denoiser
        self.config = config
        self.stats = StepCacheStats()
        self._handles = []
        self._last_t: float | None = None
        self._own_context = False
        self._tail_ran = False
        self._decided = False  # this call's first block has run: whether the others are skipped is known
        self.on_decided = None  # called once the first block has decided (the streaming engine re-aims its prefetch)
        self._blocks = cached_blocks(denoiser)
        self._skippable = {id(m) for _, b in self._blocks[1:] for m in b.modules()}

    def apply(self) -> "StepCache":
        from diffusers.hooks import FirstBlockCacheConfig, HookRegistry, apply_first_block_cache

        if not self._blocks:
            raise UserError(f"Step caching needs a transformer denoiser; {type(self.denoiser).__name__} has no list of "
                            "transformer blocks diffusers' first-block cache supports: run without --step-cache.")
        apply_first_block_cache(self.denoiser, FirstBlockCacheConfig(threshold=self.config.threshold))
        # diffusers caches the list of child registries on the denoiser's registry the first time a
        # pipeline sets a cache context; one made before the blocks had hooks would miss them
        HookRegistry.check_if_exists_or_initialize(self.denoiser)._child_registries_cache = None
        head = self._blocks[0][1]
        self._leader = HookRegistry.check_if_exists_or_initialize(head).get_hook(_FBC_HOOK_NAMES[0])
        self._handles.append(self.denoiser.register_forward_pre_hook(self._pre, with_kwargs=True))
        self._handles.append(self.denoiser.register_forward_hook(self._post))
        # the tail block's children run only when the step is computed (a cached step returns its inputs)
        for child in self._blocks[-1][1].children():
            self._handles.append(child.register_forward_pre_hook(self._tail_child_ran))
        self._handles.append(head.register_forward_hook(self._head_ran))
        return self

    def skips(self, module: torch.nn.Module) -> bool:
        """True when `module` (a block after the first, or part of one) will not compute in this call: the
        first block has run and found its residual unchanged. False while that is not known yet."""
        return self._decided and id(module) in self._skippable and not self._leader.state_manager.get_state().should_compute

    def remove(self) -> None:
        from diffusers.hooks import HookRegistry

        for h in self._handles:
            h.remove()
        self._handles.clear()
        for _, block in self._blocks:
            registry = HookRegistry.check_if_exists_or_initialize(block)
            for name in _FBC_HOOK_NAMES:
                registry.remove_hook(name, recurse=False)

    # ------------------------------------------------------------------ hooks
    def _pre(self, module, args, kwargs):
        from diffusers.hooks.hooks import CacheContext

        manager = self._leader.state_manager
        # diffusers keeps the context private; a pipeline that set one (cond / uncond) keeps it
        context = getattr(manager, "_context", None)
        t = _timestep(args, kwargs)
        if t is not None and self._last_t is not None and t > self._last_t:
            # a new image: forget the last one's residuals (reset also clears the context)
            from diffusers.hooks import HookRegistry

            HookRegistry.check_if_exists_or_initialize(self.denoiser).reset_stateful_hooks(recurse=True)
        self._last_t = t if t is not None else self._last_t
        self._own_context = context is None
        self._set_context(context or CacheContext(_OWN_CONTEXT))
        self._tail_ran = False
        self._decided = False

    def _post(self, module, args, output):
        self.stats.calls += 1
        self.stats.computed += int(self._tail_ran)
        self._decided = False
        if self._own_context:
            self._set_context(None)
        return output

    def _tail_child_ran(self, module, args):
        self._tail_ran = True

    def _head_ran(self, module, args, output):
        self._decided = True  # diffusers' head hook has set should_compute for the rest of the call
        if self.on_decided is not None:
            self.on_decided()

    def _set_context(self, context) -> None:
        from diffusers.hooks.hooks import _set_cache_context

        _set_cache_context(self.denoiser, context)


def _timestep(args, kwargs) -> float | None:
    """The call's timestep (diffusers denoisers take it as `timestep`, UNets positionally second)."""
    t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
    if isinstance(t, torch.Tensor) and t.numel():
        return float(t.flatten()[0])
    return float(t) if isinstance(t, (int, float)) else None
