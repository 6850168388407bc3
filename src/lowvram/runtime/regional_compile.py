"""Regional torch.compile: compile each repeated block's forward, never the hooks around it.

Diffusion denoisers are a stack of the same block (Flux: 19 double + 38 single, SDXL: 70 transformer
blocks); compiling the block class once and reusing the graph for every instance costs a fraction of a
whole-model compile (PyTorch's regional compilation recipe) and keeps most of its speed-up. diffusers
ships the list of those classes (`ModelMixin._repeated_blocks`) and `compile_repeated_blocks()`, but
that calls `module.compile()`, which compiles `_call_impl` — the module's hooks included. Streaming's
hooks swap weights in and out and wait on CUDA events: traced by dynamo they would be burnt into the
graph or break it. So here only `block.forward` is replaced by its compiled version (an instance
attribute, removed again by `remove()`), and the hooks keep running eagerly around it.

A block that holds a streaming unit boundary inside it (a unit of `structure.streamable_units` strictly
below it) would carry hooks inside its forward; such blocks are left eager.

If the compiler itself fails on the first call (no C compiler, no Triton for the card), every block of
the model goes back to its eager forward, the call runs eagerly, and `RegionalCompile.failed` says why:
a run is never lost to an optional speed-up. Errors of the model's own code propagate as they would eagerly.

CUDA graphs (`mode="reduce-overhead"`) are not allowed: a graph replays the device addresses it
captured, and a streamed block's weights live in whichever of two buffer slots the copy used.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from ..errors import InternalError
from ..structure import streamable_units

# The modes whose compiled code reads its inputs' addresses afresh on every call (no CUDA graphs).
ALLOWED_MODES = (None, "default", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class CompileConfig:
    """What torch.compile is asked for. `dynamic=None` lets dynamo mark a dimension dynamic after it
    saw it change (a server's mixed resolutions compile twice, then generalise)."""

    backend: str = "inductor"
    mode: str | None = None
    dynamic: bool | None = None
    fullgraph: bool = False


@dataclass
class RegionalCompile:
    """The blocks whose forward was replaced; `remove()` puts their class's forward back."""

    module: torch.nn.Module
    blocks: list[str] = field(default_factory=list)  # dotted names of the compiled blocks
    classes: tuple[str, ...] = ()
    failed: str = ""  # why the compiler failed, when it did (the blocks then run eagerly)

    def remove(self) -> None:
        for name in self.blocks:
            block = self.module.get_submodule(name)
            if "forward" in block.__dict__:
                del block.forward
        self.blocks = []


def compile_targets(module: torch.nn.Module) -> list[str]:
    """The dotted names of the blocks to compile, outermost first, none inside another:
    - the model's own repeated blocks (diffusers' `_repeated_blocks` class names, declared per
      architecture), unless a streaming unit boundary lies inside one (then its hooks would be traced);
    - otherwise the repeated units themselves: every non-leaf streamable unit whose class at least two
      units share (a Flux double block is big enough to be split into units: its attention and
      feed-forward are compiled instead; a leaf such as one Linear gains nothing from compiling)."""
    units = [u.name for u in streamable_units(module) if u.name != "<root>"]
    unit_set = set(units)
    declared = set(getattr(module, "_repeated_blocks", None) or ())
    repeated_units = Counter(type(module.get_submodule(u)).__name__ for u in units
                             if next(module.get_submodule(u).children(), None) is not None)
    chosen: list[str] = []
    for name, block in module.named_modules():
        if not name or any(name.startswith(c + ".") for c in chosen):
            continue
        cls = type(block).__name__
        wanted = cls in declared or (name in unit_set and repeated_units[cls] >= 2)
        if wanted and not any(u.startswith(name + ".") for u in units):
            chosen.append(name)
    return chosen


def apply_regional_compile(module: torch.nn.Module, config: CompileConfig = CompileConfig()) -> RegionalCompile:
    """Compile the forward of every block `compile_targets` names (see the module docstring)."""
    if config.mode not in ALLOWED_MODES:
        raise InternalError(f"regional compile mode {config.mode!r} would capture CUDA graphs, which replay the "
                            f"addresses of streamed weights; use one of {ALLOWED_MODES}")
    handle = RegionalCompile(module)
    for name in compile_targets(module):
        block = module.get_submodule(name)
        compiled = torch.compile(block.forward, backend=config.backend, mode=config.mode,
                                 dynamic=config.dynamic, fullgraph=config.fullgraph)
        block.forward = _falls_back(compiled, block.forward, handle)
        handle.blocks.append(name)
    handle.classes = tuple(sorted({type(module.get_submodule(n)).__name__ for n in handle.blocks}))
    return handle


def _falls_back(compiled, eager, handle: RegionalCompile):
    """`compiled`, or `eager` for good once the compiler has failed (for this block and all the others)."""
    from torch._dynamo.exc import BackendCompilerFailed

    def forward(*args, **kwargs):
        if handle.failed:
            return eager(*args, **kwargs)
        try:
            return compiled(*args, **kwargs)
        except BackendCompilerFailed as e:
            handle.failed = f"{type(e.inner_exception).__name__}: {e.inner_exception}"[:300]
            return eager(*args, **kwargs)

    return forward
