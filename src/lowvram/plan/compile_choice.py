"""Whether to compile the denoiser's repeated blocks: only where the compile time pays back.

Regional torch.compile (runtime/regional_compile.py) makes each denoiser call's compute faster but costs
a compile before the first step of every load. It pays back when the seconds it saves over the calls the
loaded weights serve (steps x images: a server or a batch job, `Workload.images_per_load`) exceed the
compile time. Streaming is not made faster by compiling: where a call waits on the host link, only the
part of its compute above the copy time can shrink.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..contract import ComponentPlan, Plan
from . import cost

# Seconds to compile one denoiser's repeated blocks with inductor on a GPU, cold (no cache). An assumed
# figure until bench/gpu_streaming.py --compile measures it: compiling one block class and reusing the
# graph for all instances takes seconds to tens of seconds (PyTorch's regional compilation recipe; a
# whole-model Flux compile takes minutes), and Replicate reports ~60 s of a Flux-dev cold start going
# to torch.compile (replicate.com/blog/torch-compile-caching). 60 s: the conservative end.
REGIONAL_COMPILE_SECONDS = 60.0

# A compiled call's compute time / the eager one's. torch.compile and diffusers, a hands-on guide to peak
# performance (pytorch.org blog, 2025): Flux-dev on an H100 ~1.2-1.5x from compile; regional compile with
# CPU offload on an RTX 4090 1.12x of the whole pipeline. 0.85 (1.18x on compute): an assumption at the low
# end, to be replaced by the GPU session's measurement.
COMPILED_COMPUTE_FRACTION = 0.85

# Storage precisions whose weights are plain tensors in the compiled graph; 8-bit and GGUF weights are
# dequantised by hooks on the Linear layers inside the blocks, which compiling would trace.
COMPILABLE_PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class CompileChoice:
    use: bool
    compile_seconds: float
    saved_seconds: float  # over every call the loaded weights serve
    reason: str


def regional_compile_choice(den: ComponentPlan, images_per_load: int, link_bytes_per_s: float,
                            device: str = "cuda") -> CompileChoice:
    """Compile `den`'s repeated blocks when the seconds saved over `images_per_load` images exceed the
    compile time. A call's compute is its planned seconds less the fixed per-call overhead; the compiled
    call takes max(compute x COMPILED_COMPUTE_FRACTION, streamed bytes / link), as copies hide behind it."""
    if device == "cpu":
        return CompileChoice(False, 0.0, 0.0, "not compiled: the compile figures are GPU measurements")
    if den.precision not in COMPILABLE_PRECISIONS:
        return CompileChoice(False, 0.0, 0.0, f"not compiled: {den.precision} weights are dequantised by hooks "
                                              f"inside the blocks")
    compute = max(0.0, den.seconds_per_call - cost.PER_CALL_OVERHEAD_S)
    copy = den.streamed_bytes / link_bytes_per_s if link_bytes_per_s else 0.0
    per_call = max(compute, copy) - max(compute * COMPILED_COMPUTE_FRACTION, copy)
    calls = den.calls_per_image * images_per_load
    saved = per_call * calls
    use = saved > REGIONAL_COMPILE_SECONDS
    verdict = "compiled" if use else "not compiled"
    why = (f"{verdict}: saves {per_call * 1000:.1f} ms x {calls} calls ({den.calls_per_image} per image x "
           f"{images_per_load} image{'s' if images_per_load != 1 else ''} per load) = {saved:.0f} s "
           f"{'>' if use else '<='} {REGIONAL_COMPILE_SECONDS:.0f} s to compile")
    if per_call <= 0:
        why = f"not compiled: each call waits on the host link ({copy:.2f} s of copies), which compiling does not shorten"
    return CompileChoice(use, REGIONAL_COMPILE_SECONDS, saved, why)


def with_compile_choice(plan: Plan) -> Plan:
    """`plan` with its denoiser's `compile_blocks` set and the choice stated among its decisions."""
    if plan.machine.device == "cpu":
        return plan
    den = next((c for c in plan.components if c.role == "denoiser" and c.placement != "cpu"), None)
    if den is None:
        return plan
    bw = plan.machine.disk_bytes_per_s if den.source == "disk" else plan.machine.link_bytes_per_s
    choice = regional_compile_choice(den, plan.workload.images_per_load, bw, plan.machine.device)
    comps = tuple(replace(c, compile_blocks=choice.use) if c is den else c for c in plan.components)
    # the plan's predicted times stay those of eager calls: the saving is stated in the decision, not
    # folded into s/step until the GPU session has measured COMPILED_COMPUTE_FRACTION
    return replace(plan, components=comps, decisions=plan.decisions + (f"{den.name} blocks {choice.reason}",))
