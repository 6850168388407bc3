"""Carry a Plan out on real modules: each component on the device for its phase.

Text encoders run, their outputs stay; the denoiser runs; the VAE decodes. Each component is activated
by a hook when it is first called (its forward, or the VAE's decode/encode); components of earlier
phases stay while the new one fits beside them and are evicted (least recent first) when it does not,
so the pipeline code (diffusers') stays untouched. Placement, resident
prefix and storage precision come from the plan; this module never re-decides them.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import replace

import torch

from ..errors import InternalError
from ..contract import STREAM_BUFFERS, ComponentPlan, Plan
from .accountant import BudgetAccountant
from .regional_compile import RegionalCompile, apply_regional_compile
from .precision import COMPUTE_DTYPES, STORAGE_DTYPES, PrecisionConfig, apply_weight_precision
from .streaming import StreamingEngine
from .vae import guard_decode

RESIDENT_ALL = 1 << 30  # "every unit resident"


class PlanExecutor:
    def __init__(self, plan: Plan, modules: dict[str, torch.nn.Module], device: torch.device | str,
                 weight_budget_bytes: int | None = None, companions: dict[str, str] | None = None) -> None:
        self.plan = plan
        self.modules = modules
        self.device = torch.device(device)
        budget = weight_budget_bytes if weight_budget_bytes is not None else plan.peak_vram_bytes - plan.reserve_bytes
        self.accountant = BudgetAccountant(budget, self.device)
        self.active: str | None = None  # the component whose phase it is
        self.engines: OrderedDict[str, StreamingEngine] = OrderedDict()  # on the device now, least recent first
        self.phases: list[str] = []  # the order components were activated in (for reports and tests)
        self._handles = []  # every hook this executor registers, removed by its handle in remove()
        self._wrapped: list[tuple[torch.nn.Module, str]] = []  # instance methods shadowing the class's
        self._cpu_hooked: set[str] = set()  # components with input/output moving hooks (placed on the CPU)
        self._guarded: set[str] = set()  # denoisers whose forward retries out-of-memory calls
        # each component's activation pre-hook, by name; in "hookless" mode a placed component has none
        self._activation: dict[str, object] = {}
        self._hookless = False
        self._compiled: list[RegionalCompile] = []  # components whose repeated blocks the plan compiles
        self.by_name = {c.name: c for c in plan.components}
        self.planned = set(self.by_name)
        self.replans: list[str] = []  # out-of-memory recoveries, in words
        self.step_cache = None  # the denoiser's StepCache when the plan asks for one (runtime/step_cache.py)
        # per component: its streamed units' laid-out page-locked host copies (runtime/host_buffer.py), kept
        # while the executor lives so that placing a component again (after an eviction) copies nothing on the host
        self._host_buffers: dict[str, dict] = {}
        self._fp8_matmuls = []  # runtime/fp8_matmul.py conversions, undone in remove()
        # components that run in another's phase (a ControlNet beside its denoiser): {companion: partner}.
        # The plan sizes a companion like any component (resident or streamed); one a plan does not
        # list (a plan made without it) is put on the device whole, in its partner's precision.
        self.companions = dict(companions or {})
        for comp, partner in self.companions.items():
            p = self.by_name[partner]
            self.by_name.setdefault(comp, replace(p, name=comp, placement="resident", resident_units=0))

    def apply(self) -> "PlanExecutor":
        for name, module in self.modules.items():
            cp = self.by_name.get(name)
            if cp is None:
                continue
            if cp.precision in ("fp8", "int8"):
                apply_weight_precision(module, PrecisionConfig(cp.precision, COMPUTE_DTYPES[cp.compute_dtype]))
            if name in self.planned:  # a companion the plan does not list takes its partner's dtype, unchecked
                check_loaded(name, module, cp)
            if cp.matmul:  # fp8 weights multiplied on fp8 tensor cores instead of dequantised per layer
                from .fp8_matmul import Fp8MatmulConfig, apply_fp8_matmul

                self._fp8_matmuls.append(apply_fp8_matmul(module, Fp8MatmulConfig(cp.matmul, COMPUTE_DTYPES[cp.compute_dtype])))
            if cp.role == "denoiser" and self.plan.step_cache and self.step_cache is None:
                from .step_cache import StepCache, StepCacheConfig

                self.step_cache = StepCache(module, StepCacheConfig(self.plan.step_cache)).apply()
                self.step_cache.on_decided = functools.partial(self._refetch, name)
            if cp.compile_blocks:  # compiled lazily, at the first call; the streaming hooks stay eager around it
                self._compiled.append(apply_regional_compile(module))
            self._hook_activation(name)
            if cp.role == "vae":  # the plan's tile size, and smaller tiles if a decode still runs out of memory
                guard_decode(module, self.plan.vae_tile, on_retry=self._vae_retry(name))
                self._wrapped.append((module, "decode"))
            # diffusers' entry points that bypass forward (vae.decode / encode, via `apply_forward_hook`)
            # call `_hf_hook.pre_forward`, and pipelines read `_hf_hook.execution_device` to place inputs
            if not hasattr(module, "_hf_hook"):
                module._hf_hook = _DeviceHook(self, name)
        self._hookless = self._nothing_ever_evicted()
        return self

    def _hook_activation(self, name: str) -> None:
        if name not in self._activation:
            self._activation[name] = self.modules[name].register_forward_pre_hook(self._pre(name), prepend=True)

    def _unhook_activation(self, name: str) -> None:
        handle = self._activation.pop(name, None)
        if handle is not None:
            handle.remove()

    def _nothing_ever_evicted(self) -> bool:
        """True when every component is planned resident and all of them fit on the device together, each
        one's activation beside all the others' weights: then no placement ever evicts another, recency
        never matters, and a placed component needs no per-call hook (issue #13: nothing paid for what is
        not streamed). A component whose call must still be noticed — streamed, on the CPU — keeps hooks."""
        names = [n for n in self.modules if n in self.by_name]
        if not names or any(self.by_name[n].placement != "resident" for n in names):
            return False
        weights = {n: _module_bytes(self.modules[n]) for n in names}
        total = sum(weights.values())
        # activate() evicts while `used + need > budget`; `used` is at most the others' weights
        return all(total - weights[n] + self._need(n) <= self.accountant.budget for n in names)

    def _need(self, name: str) -> int:
        """The bytes activate() makes room for before placing `name`."""
        cp = self.by_name[name]
        if name in self.companions and name not in self.planned:  # put on the device whole
            return _module_bytes(self.modules[name])
        if name in self.companions:  # its activations are in its partner's (the phase's) figure
            return cp.vram_bytes
        return cp.vram_bytes + cp.activation_bytes

    def _vae_retry(self, name: str):
        def note(tile: int, smaller: int) -> None:
            self.replans.append(f"{name}: out of memory decoding {f'in {tile}-px tiles' if tile else 'whole'}; "
                                f"decoded again in {smaller}-px tiles")
        return note

    def _pre(self, name: str):
        def hook(module, args):
            self.activate(name)
        return hook

    def activate(self, name: str) -> None:
        """Put `name` on the device as planned. Components of earlier phases stay on the device while
        there is room for this one beside them (the next image then skips their copies), and are
        evicted, least recently used first, when there is not."""
        if name in self.engines:
            self.engines.move_to_end(name)
            self.active = name
            return
        if self.active == name:  # a CPU-placed component: nothing to place
            return
        cp: ComponentPlan = self.by_name[name]
        module = self.modules[name]
        group = {name, self.companions.get(name)} | {c for c, p in self.companions.items() if p == name}
        need = self._need(name)
        for other in list(self.engines):
            if self.accountant.used + need <= self.accountant.budget:
                break
            if other not in group:
                self._evict(other)
        if cp.placement != "cpu" and cp.role == "denoiser" and name not in self._guarded:
            self._guard_oom(name, module)
        if name in self.companions:
            self.engines[name] = self._engine(name)
            self.phases.append(name)
            if self._hookless:
                self._unhook_activation(name)
            return  # the partner's phase goes on
        if cp.placement == "cpu":
            # the module stays in host memory and computes there; its inputs come to it and its
            # outputs go back to the device the rest of the pipeline runs on
            self.active = name
            if name not in self._cpu_hooked:
                self._handles.append(module.register_forward_pre_hook(
                    lambda m, a, k: (_to(a, "cpu"), _to(k, "cpu")), with_kwargs=True))
                self._handles.append(module.register_forward_hook(lambda m, a, out: _to(out, self.device)))
                self._cpu_hooked.add(name)
        else:
            self.engines[name] = self._engine(name)
            self.active = name
            if self._hookless:  # placed for good: its calls cost nothing from here on
                self._unhook_activation(name)
        self.phases.append(name)

    def _engine(self, name: str) -> StreamingEngine:
        """`name`'s weights on the device as its plan says: all resident, or the resident prefix + streaming."""
        cp, module = self.by_name[name], self.modules[name]
        k = RESIDENT_ALL if cp.placement == "resident" else _runtime_units(cp, module)
        # disk-backed weights stream from their file mapping: pinning them would copy them into RAM
        skip = self.step_cache.skips if self.step_cache is not None and self.step_cache.denoiser is module else None
        # weights held in RAM are laid out per unit (one copy a unit; on a CPU too, where it is one memcpy)
        return StreamingEngine(module, self.device, k, self.accountant, owner=name,
                               pin_memory=False if cp.source == "disk" else None, coalesce=cp.source != "disk",
                               host_buffers=self._host_buffers.setdefault(name, {}), skip_unit=skip,
                               buffers=cp.stream_buffers).apply()

    def _refetch(self, name: str) -> None:
        engine = self.engines.get(name)
        if engine is not None:
            engine.refetch()

    def _evict(self, name: str) -> None:
        self.engines.pop(name).remove()
        self._hook_activation(name)  # its next call places it again
        if self.active == name:
            self.active = None

    def _guard_oom(self, name: str, module: torch.nn.Module) -> None:
        """If a denoiser call still runs out of memory (another program took VRAM), keep fewer units
        resident and run the same call again: a forward is a pure function of its inputs, so the step's
        latents are untouched and the result equals an uninterrupted run's."""
        original = module.forward

        @functools.wraps(original)
        def guarded(*args, **kwargs):
            while True:
                try:
                    return original(*args, **kwargs)
                except torch.OutOfMemoryError:
                    if not self._shrink(name):
                        raise

        module.forward = guarded
        self._guarded.add(name)
        self._wrapped.append((module, "forward"))

    def _shrink(self, name: str) -> bool:
        """Make room for `name`'s call: first evict every other component still held, then re-plan
        `name` with half its resident units (all streamed at the end); False if nothing is left."""
        cp = self.by_name[name]
        group = {name} | {c for c, p in self.companions.items() if p == name}
        others = [n for n in self.engines if n not in group]
        free = torch.cuda.mem_get_info(self.device)[0] if self.device.type == "cuda" else None
        where = f" with {free / 2**30:.1f} GiB free" if free is not None else ""
        if others:
            for n in others:
                self._evict(n)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.replans.append(f"{name}: out of memory{where}; evicted {', '.join(others)}")
            return True
        engine = self.engines.get(name)
        if engine is None:
            return False
        current = sum(1 for u in engine.units if u.resident)
        if current == 0:
            return False
        new_k = current // 2
        self._evict(name)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.by_name[name] = replace(cp, placement="streamed", resident_units=new_k, resident_indices=(),
                                     stream_buffers=STREAM_BUFFERS)
        self.replans.append(f"{name}: out of memory{where}; re-planned with {new_k} resident units")
        self.activate(name)
        return True

    def deactivate(self) -> None:
        """Evict every component from the device."""
        for name in list(self.engines):
            self._evict(name)
        self.active = None

    def remove(self) -> None:
        """Undo apply(): every component off the device, every hook removed by its handle, every
        attribute this executor set deleted, so the modules are as the loader made them (a Session
        re-plans a loaded model by removing one executor and applying another)."""
        self.deactivate()
        for buffers in self._host_buffers.values():
            for buf in buffers.values():
                buf.release()  # unpinned now; the memory goes with the weights that view it
        self._host_buffers = {}
        if self.step_cache is not None:
            self.step_cache.remove()
            self.step_cache = None
        for converted in self._fp8_matmuls:
            converted.remove()
        self._fp8_matmuls = []
        for h in self._handles:
            h.remove()
        for name in list(self._activation):
            self._unhook_activation(name)
        for compiled in self._compiled:
            compiled.remove()
        self._compiled = []
        for module, method in self._wrapped:
            if method in module.__dict__:
                delattr(module, method)  # the instance attribute shadowed the class method
        for module in self.modules.values():
            if isinstance(getattr(module, "_hf_hook", None), _DeviceHook):
                del module._hf_hook
        self._handles, self._wrapped = [], []
        self._cpu_hooked.clear()
        self._guarded.clear()


class PlanMismatch(InternalError):
    """A loaded module holds its weights in other dtypes or bytes than its plan counted."""


# Relative difference allowed between a real-size module's parameter bytes and its plan's weight_bytes:
# the plan's units count the same parameters, so only rounding of 8-bit scales may differ.
WEIGHT_BYTES_TOLERANCE = 0.01


def check_loaded(name: str, module: torch.nn.Module, cp: ComponentPlan) -> None:
    """Before anything is placed: every floating parameter is in the plan's dtype (8-bit Linear weights
    in its storage type), and a module of the planned architecture (same parameter count) holds the
    plan's bytes. Raises PlanMismatch — a bug, e.g. a plan that counted fp16 for a CPU computing in
    fp32 — instead of a BudgetExceeded halfway through loading the device."""
    if cp.precision not in COMPUTE_DTYPES and cp.precision not in STORAGE_DTYPES:
        return  # GGUF blocks: stored as the file has them
    want = COMPUTE_DTYPES[cp.compute_dtype]
    quantised = STORAGE_DTYPES.get(cp.precision)
    params = nbytes = 0
    for owner_name, owner in module.named_modules():
        for pname, p in owner.named_parameters(recurse=False):
            params += p.numel()
            nbytes += p.numel() * p.element_size()
            expected = quantised if quantised is not None and pname == "weight" and hasattr(owner, "weight_scale") else want
            if (p.is_floating_point() or p.dtype == quantised) and p.dtype != expected:
                raise PlanMismatch(f"{name}.{owner_name + '.' if owner_name else ''}{pname} is loaded as {p.dtype} "
                                   f"but the plan runs {name} in {cp.precision} (compute {cp.compute_dtype})")
    if cp.weight_bytes and params == cp.params and abs(nbytes - cp.weight_bytes) > WEIGHT_BYTES_TOLERANCE * cp.weight_bytes:
        raise PlanMismatch(f"{name} holds {nbytes} bytes of weights but its plan counted {cp.weight_bytes}")


class _DeviceHook:
    """The minimal accelerate-style hook diffusers pipelines look for."""

    def __init__(self, executor: PlanExecutor, name: str) -> None:
        self.executor, self.name = executor, name
        self.execution_device = executor.device

    def pre_forward(self, module, *args, **kwargs):
        self.executor.activate(self.name)
        return args, kwargs


def _runtime_units(cp: ComponentPlan, module: torch.nn.Module) -> int | tuple[int, ...]:
    """The plan's resident units in this module's units: its indices (spread) or its prefix. Equal for
    catalogue architectures; for a variant with another unit count (a scaled-down test model), a prefix
    of the same fraction of units."""
    if not cp.total_units:
        return cp.resident_units
    from ..structure import streamable_units

    n = len(streamable_units(module))
    if n == cp.total_units:
        return cp.resident_indices or cp.resident_units
    return round(cp.resident_units * n / cp.total_units)


def _module_bytes(module: torch.nn.Module) -> int:
    """Every parameter and buffer of `module`, each counted once, at its current dtype."""
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def _to(obj, device):
    """Move every tensor in a (nested) call argument or model output to `device`."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):  # includes transformers' / diffusers' ModelOutput
        for k in list(obj.keys()):
            obj[k] = _to(obj[k], device)
        return obj
    if isinstance(obj, (list, tuple)):
        moved = [_to(v, device) for v in obj]
        return type(obj)(moved) if not hasattr(obj, "_fields") else type(obj)(*moved)
    return obj

