"""ComfyUI's memory management as a peer of bench/peers.py: its partial loading ("lowvram" mode) on the
same random-weight diffusers module the other peers run, at the same budget.

ComfyUI is not a PyPI package and its code is not part of this repository: the session places a ComfyUI
checkout's Python files (the `comfy/` package and `node_helpers.py`, at the commit docs/benchmarks.md
names) in the directory `LOWVRAM_COMFYUI` points to (default `.whl/comfyui`, git-ignored), and the
`comfy-aimdo` wheel comes with bench/gpu_wheels.sh. Without them the ComfyUI row says so and the others run.

How a diffusers module is made comfy-manageable: ComfyUI keeps a layer's weights in host memory and
copies them per call only for layers built from `comfy.ops` (the patcher tests `hasattr(m,
"comfy_cast_weights")` and moves every other module whole). Those classes subclass torch's own
(`comfy.ops.disable_weight_init.Linear(torch.nn.Linear, CastWeightBiasOp)`, ...) and run torch's forward
when the layer is resident, so re-classing each layer of an exact torch type gives the same module, the
same weights and (with the same kernels) the same output, under comfy's `ModelPatcher` and
`comfy.model_management.load_models_gpu` — what ComfyUI's sampler calls before denoising. The re-classing
and everything comfy set on the layers are undone afterwards, so the next peer sees the original module.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Callable

import torch

ENV = "LOWVRAM_COMFYUI"
DEFAULT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".whl", "comfyui")
GiB = 2**30
# what comfy sets on a layer or on the patched model (comfy/model_patcher.py, comfy/pinned_memory.py), removed
# again on undo; a class attribute of the same name (comfy.ops.CastWeightBiasOp's) goes with the class
COMFY_ATTRS = ("comfy_cast_weights", "prev_comfy_cast_weights", "comfy_force_cast_weights", "comfy_patched_weights",
               "weight_function", "bias_function", "_pin", "pin_failed", "_v", "_v_signature")


class ComfyAbsent(RuntimeError):
    """ComfyUI's code is not where the session should have put it: the row is a note, not a failure."""


def comfy_dir() -> str:
    return os.path.abspath(os.environ.get(ENV) or DEFAULT_DIR)


def absent_note(path: str | None = None) -> str | None:
    """Why ComfyUI cannot be imported from `path`, or None when its files are there."""
    path = path or comfy_dir()
    missing = [f for f in ("comfy/model_patcher.py", "comfy/ops.py", "node_helpers.py")
               if not os.path.isfile(os.path.join(path, f))]
    if missing:
        return (f"ComfyUI not measured: {', '.join(missing)} not in {path} (set {ENV} to a ComfyUI checkout's "
                "directory; docs/benchmarks.md says which commit)")
    return None


# torch settings `import comfy.model_management` changes for the whole process (ENABLE_PYTORCH_ATTENTION,
# allow_fp16_bf16_reduction_math_sdp): comfy's row runs with them, the rows after it without
def _settings() -> dict:
    b = torch.backends
    out = {"cudnn_benchmark": b.cudnn.benchmark, "math_sdp": b.cuda.math_sdp_enabled(),
           "flash_sdp": b.cuda.flash_sdp_enabled(), "mem_efficient_sdp": b.cuda.mem_efficient_sdp_enabled()}
    if hasattr(b.cuda, "fp16_bf16_reduction_math_sdp_allowed"):
        out["fp16_bf16_reduction_math_sdp"] = b.cuda.fp16_bf16_reduction_math_sdp_allowed()
    return out


def _set(settings: dict) -> None:
    b = torch.backends
    setters = {"cudnn_benchmark": lambda v: setattr(b.cudnn, "benchmark", v), "math_sdp": b.cuda.enable_math_sdp,
               "flash_sdp": b.cuda.enable_flash_sdp, "mem_efficient_sdp": b.cuda.enable_mem_efficient_sdp,
               "fp16_bf16_reduction_math_sdp": getattr(b.cuda, "allow_fp16_bf16_reduction_math_sdp", None)}
    for k, v in settings.items():
        setters[k](v)


_COMFY: dict = {}  # the imported comfy.model_management and the torch settings it made


def import_comfy(device: torch.device):
    """comfy.model_management, imported once: it parses sys.argv (comfy.cli_args) and probes the device at
    import, so it sees an argv of its own — `--cpu` for the CPU dry run; `--disable-cuda-malloc` on a GPU,
    since the budget is torch's native allocator's (ComfyUI's main.py would switch torch to cudaMallocAsync
    before torch starts, which a process that has run the other rows cannot do)."""
    if "mm" in _COMFY:
        return _COMFY["mm"]
    note = absent_note()
    if note:
        raise ComfyAbsent(note)
    path = comfy_dir()
    if path not in sys.path:  # last: a checkout's top-level names (utils, server, ...) must shadow nothing
        sys.path.append(path)
    before, argv = _settings(), sys.argv
    import comfy.options

    comfy.options.enable_args_parsing(True)
    sys.argv = [argv[0], "--cpu" if device.type != "cuda" else "--disable-cuda-malloc"]
    try:
        import comfy.model_management as mm
        import comfy.model_patcher  # noqa: F401  (imports the whole model zoo: seconds, once)
        import comfy.ops  # noqa: F401
    finally:
        sys.argv = argv
        comfy.options.enable_args_parsing(False)
    _COMFY.update(mm=mm, settings=_settings())
    _set(before)
    return mm


def cast_classes(ops) -> dict[type, type]:
    """torch layer class -> the `ops` class (e.g. comfy.ops.disable_weight_init) that subclasses it under the
    same name and can cast its own weights per call."""
    out = {}
    for name, cls in vars(ops).items():
        if not isinstance(cls, type):
            continue
        base = next((b for b in cls.__mro__[1:] if b.__module__.startswith("torch.nn.") and b.__name__ == name), None)
        if base is not None:
            out[base] = cls
    return out


def reclass_(module: torch.nn.Module, classes: dict[type, type]) -> tuple[Callable[[], None], dict]:
    """Give every layer whose type is exactly a key of `classes` the mapped class (a subclass: same state,
    same forward while not cast). Returns (undo, figures): undo restores each class and removes what comfy
    set on any submodule; figures say how much of the weights comfy can offload layer by layer."""
    changed, no_bias = [], []
    for m in module.modules():
        cls = classes.get(type(m))
        if cls is not None:
            changed.append((m, type(m)))
            m.__class__ = cls
            if not hasattr(m, "bias"):  # comfy's casting reads `bias` of every layer; its RMSNorm sets None itself
                m.bias = None
                no_bias.append(m)
    castable = sum(p.numel() * p.element_size() for m, _ in changed for p in m.parameters(recurse=False))
    total = sum(p.numel() * p.element_size() for p in module.parameters())

    def undo() -> None:
        for m, cls in changed:
            m.__class__ = cls
        for m in no_bias:
            m.__dict__.pop("bias", None)
        for m in module.modules():
            for attr in COMFY_ATTRS:
                m.__dict__.pop(attr, None)
    return undo, {"comfy_layers": len(changed), "castable_pct": 100 * castable / total if total else 0.0}


class Host(torch.nn.Module):
    """What the ModelPatcher holds: ComfyUI's own models are a BaseModel with the network as `diffusion_model`,
    and the patcher assigns `model.device`, which a diffusers ModelMixin has as a read-only property."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.diffusion_model = module
        self.device = torch.device("cpu")


def residue_(module: torch.nn.Module, device: torch.device) -> int:
    """Put on `device` every parameter and buffer comfy left on the host and will not cast per call: those
    of layers that are no comfy.ops class (diffusers' own RMSNorm, bare parameters), which the patcher loads
    only where they fit in its list and never when their module has children with weights. Comfy's own
    models have no such tensors (every weight is in a comfy.ops layer). Returns the bytes moved."""
    moved = 0
    for m in module.modules():
        if getattr(m, "comfy_cast_weights", False):
            continue
        for store in (m._parameters, m._buffers):
            for name, t in store.items():
                if t is not None and t.device != device:
                    new = t.data.to(device)
                    # torch's own rule (Module._apply): keep the Parameter object where the storage type allows
                    if isinstance(t, torch.nn.Parameter) and torch._has_compatible_shallow_copy_type(t, new):
                        t.data = new
                    else:
                        store[name] = torch.nn.Parameter(new, t.requires_grad) if isinstance(t, torch.nn.Parameter) else new
                    moved += t.numel() * t.element_size()
    return moved


def _budgeted_free_memory(orig, budget_bytes: int, device: torch.device):
    """comfy's free-memory query as a card of `budget_bytes` would answer it: the budget less what torch's
    allocator holds in use (comfy reads cudaMemGetInfo, which the memory fraction does not change)."""
    def get_free_memory(dev=None, torch_free_too=False):
        total, torch_free = orig(dev, torch_free_too=True)
        if dev is None or getattr(dev, "type", None) == "cuda":
            active = torch.cuda.memory_stats(device).get("active_bytes.all.current", 0)
            total = min(total, max(0, budget_bytes - active))
        return (total, torch_free) if torch_free_too else total
    return get_free_memory


def apply_comfy(module: torch.nn.Module, device: torch.device, budget_bytes: int, activation_bytes: int):
    """ComfyUI's partial load of `module` for `device` at `budget_bytes`; returns undo, with the row's extra
    figures as `undo.info`. On a GPU: `load_models_gpu([patcher], memory_required=activations + comfy's
    inference margin)` as comfy's sampler calls it (comfy/sampler_helpers.py), comfy's free-memory query
    answering for a card of the budget. On the CPU dry run comfy loads everything whole (its vram state is
    DISABLED there), so the call load_models_gpu makes on a GPU, `partially_load(device, weight budget)`,
    is made directly with half the weights as the budget: the same code path, cast per call included."""
    mm = import_comfy(device)
    import comfy.ops
    from comfy.model_patcher import ModelPatcher

    before = _settings()
    unclass, info = reclass_(module, cast_classes(comfy.ops.disable_weight_init))
    cuda = device.type == "cuda"
    load_device = mm.get_torch_device() if cuda else device
    state = {"orig_free": mm.get_free_memory}

    def undo() -> None:
        try:
            patcher = state.pop("patcher", None)
            if patcher is not None:
                if cuda:
                    mm.unload_all_models()  # comfy's own unload: detach (weights to the host, unpinned, casts off)
                mm.current_loaded_models[:] = [m for m in mm.current_loaded_models if m.model is not patcher]
                patcher.detach()  # the same again where comfy did not (the CPU run never registered it): idempotent
            mm.reset_cast_buffers()
        finally:
            mm.get_free_memory = state["orig_free"]
            _set(before)
            unclass()
            gc.collect()

    try:
        _set(_COMFY["settings"])
        patcher = state["patcher"] = ModelPatcher(Host(module), load_device=load_device,
                                                  offload_device=torch.device("cpu"))
        if cuda:
            mm.get_free_memory = _budgeted_free_memory(state["orig_free"], budget_bytes, load_device)
            need = activation_bytes + mm.minimum_inference_memory()
            mm.load_models_gpu([patcher], memory_required=need, minimum_memory_required=need)
        else:
            patcher.partially_load(load_device, extra_memory=patcher.model_size() // 2)
        host = patcher.model
        info.update(comfy_loaded_GiB=host.model_loaded_weight_memory / GiB, comfy_partial=bool(host.model_lowvram),
                    comfy_cast_layers=sum(1 for m in module.modules() if getattr(m, "comfy_cast_weights", False)),
                    residue_MiB=residue_(module, load_device) / 2**20)
    except BaseException:
        undo()
        raise
    undo.info = info
    return undo
