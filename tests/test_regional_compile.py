"""Regional torch.compile (issue #13 item 3a): the blocks are compiled, the streaming hooks are not, the
output is the eager one's, and the planner compiles only where the compile time pays back."""

from dataclasses import replace

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from lowvram.contract import ComponentPlan, Machine, Plan, Workload
from lowvram.plan import cost
from lowvram.plan.compile_choice import (COMPILED_COMPUTE_FRACTION, REGIONAL_COMPILE_SECONDS,
                                         regional_compile_choice, with_compile_choice)
from lowvram.runtime.accountant import BudgetAccountant
from lowvram.runtime.executor import PlanExecutor
from lowvram.runtime.regional_compile import CompileConfig, apply_regional_compile, compile_targets
from lowvram.runtime.streaming import StreamingEngine

# Inductor's fp32 kernels fuse the block (LayerNorm, GELU, bias adds) and may reorder reductions:
# results differ from eager in the last bits (~1e-7 measured here), well inside this tolerance.
FP32_COMPILE_TOL = 1e-5


class Block(torch.nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(width)
        self.up = torch.nn.Linear(width, 2 * width)
        self.down = torch.nn.Linear(2 * width, width)

    def forward(self, x):
        return x + self.down(torch.nn.functional.gelu(self.up(self.norm(x))))


class Stack(torch.nn.Module):
    """64 equal blocks, each under 1/48 of the model: every block is one streamable unit."""

    _repeated_blocks = ("Block",)  # as diffusers declares them on its models

    def __init__(self, n: int = 64) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList(Block() for _ in range(n))

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


def _stack():
    torch.manual_seed(0)
    m, x = Stack(), torch.randn(4, 16)
    with torch.no_grad():
        ref = m(x).clone()
    return m, x, ref


def test_compiled_blocks_compose_with_streaming_and_compile_once():
    """Dynamo sees the blocks only: one graph serves all 64 (no recompile per instance, nothing of the
    hooks traced), and the streamed weights are still copied every call."""
    m, x, ref = _stack()
    eng = StreamingEngine(m, "cpu", 8, BudgetAccountant(10**9)).apply()
    counter = CompileCounter()  # a backend that runs the captured graph eagerly and counts captures
    handle = apply_regional_compile(m, CompileConfig(backend=counter))
    assert handle.blocks == [f"blocks.{i}" for i in range(64)] and handle.classes == ("Block",)
    with torch.no_grad():
        for _ in range(3):
            assert torch.equal(m(x), ref)
    assert counter.frame_count == 1
    assert eng.stats.copies >= 2 * 56 and eng.stats.sync_loads == 0  # 56 streamed units, prefetched in time
    handle.remove()
    eng.remove()
    assert all("forward" not in b.__dict__ for b in m.blocks)


def test_a_block_with_streaming_hooks_inside_is_left_eager():
    """A declared block split into several units would carry hooks inside its forward: its units are
    compiled instead where they repeat, never the block around them."""
    torch.manual_seed(0)
    m = Stack(n=4)  # four blocks of a quarter each: split into their layers
    assert compile_targets(m) == []  # the layers are leaves: nothing worth compiling


def test_inductor_compiled_streamed_stack_equals_eager_within_fp32_tolerance():
    m, x, ref = _stack()
    torch._dynamo.reset()
    eng = StreamingEngine(m, "cpu", 8, BudgetAccountant(10**9)).apply()
    handle = apply_regional_compile(m)  # inductor: one tiny block class, one C++ kernel build
    with torch.no_grad():
        outs = [m(x) for _ in range(2)]
    for out in outs:
        torch.testing.assert_close(out, ref, atol=FP32_COMPILE_TOL, rtol=FP32_COMPILE_TOL)
    handle.remove()
    eng.remove()
    torch._dynamo.reset()


def _den(seconds_per_call=0.5, streamed=0, precision="bf16", calls=28):
    return ComponentPlan(name="transformer", role="denoiser", params=0, stored_bytes=0, placement="resident",
                         precision=precision, compute_dtype="bf16", vram_bytes=0, streamed_bytes=streamed,
                         seconds_per_call=seconds_per_call, calls_per_image=calls)


def test_compile_is_chosen_only_where_it_pays_back():
    # compute = 0.5 s - per-call overhead; saved per call = compute x (1 - fraction); 28 calls an image
    compute = 0.5 - cost.PER_CALL_OVERHEAD_S
    per_call = compute * (1 - COMPILED_COMPUTE_FRACTION)
    one = regional_compile_choice(_den(), 1, 25e9)
    assert not one.use and one.saved_seconds == pytest.approx(per_call * 28)
    images = int(REGIONAL_COMPILE_SECONDS / (per_call * 28)) + 1  # the first load size that pays back
    assert regional_compile_choice(_den(), images, 25e9).use
    assert not regional_compile_choice(_den(), images - 1, 25e9).use
    # link-bound: 20 GB streamed per call at 25 GB/s = 0.8 s of copies > the compute: nothing to gain
    bound = regional_compile_choice(_den(streamed=20 * 10**9), 10_000, 25e9)
    assert not bound.use and bound.saved_seconds == 0 and "host link" in bound.reason
    assert not regional_compile_choice(_den(precision="fp8"), 10_000, 25e9).use  # hooks inside the blocks
    assert not regional_compile_choice(_den(), 10_000, 25e9, device="cpu").use


def test_plan_states_the_choice_and_the_executor_carries_it_out():
    m, x, ref = _stack()
    den = replace(_den(), placement="resident")
    plan = Plan(model="flux-dev", policy="lossless", fits=True, workload=Workload(64, 64, images_per_load=1000),
                machine=Machine("gpu", 1 << 30, 1 << 34, 25e9, 100.0), components=(den,), attention="sdpa",
                attention_chunk=0, cfg_mode="none", vae_tile=0, peak_vram_bytes=1 << 30, peak_ram_bytes=0,
                seconds_per_step=0, seconds_per_image=0, reserve_bytes=0)
    chosen = with_compile_choice(plan)
    assert chosen.components[0].compile_blocks and "transformer blocks compiled" in chosen.decisions[-1]
    assert not with_compile_choice(replace(plan, workload=Workload(64, 64))).components[0].compile_blocks
    cp = replace(chosen.components[0], precision="fp32", compute_dtype="fp32")
    ex = PlanExecutor(replace(chosen, components=(cp,)), {"transformer": m}, "cpu").apply()
    assert all("forward" in b.__dict__ for b in m.blocks)  # compiled lazily: nothing is built until a call
    ex.remove()
    assert all("forward" not in b.__dict__ for b in m.blocks)


def test_a_failing_compiler_leaves_the_blocks_eager():
    """No C compiler or no Triton must not cost the image: the blocks run eagerly and the handle says why."""
    m, x, ref = _stack()

    def broken(gm, example_inputs):
        raise RuntimeError("no C compiler (injected)")

    handle = apply_regional_compile(m, CompileConfig(backend=broken))
    with torch.no_grad():
        for _ in range(2):
            assert torch.equal(m(x), ref)
    assert "no C compiler" in handle.failed
    handle.remove()
    torch._dynamo.reset()
