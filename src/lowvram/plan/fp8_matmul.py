"""The planner's fp8-matmul choice: fp8 weights multiplied on fp8 tensor cores instead of dequantised.

Chosen under `--quality fast` for every component whose weights the plan stores in fp8, on cards with
fp8 tensor cores (Machine.fp8: Ada, Hopper, Blackwell — machines/cards.py), never on a CPU machine. Not
under `balanced`: quantising activations is lossier than 8-bit storage, and the speed-up is an estimate,
so it must not be what tips a balanced plan into lowering precision (planner.make_plan). Its cost replaces the
per-layer dequantisation overhead: the Linear layers' share of the FLOPs runs at the fp8 rate, the rest
(attention's own matmuls, convolutions, norms) as before, plus a pass quantising each activation.
Its deviation: activations are rounded to fp8-e4m3 too (3 mantissa bits), on top of the weights' own
rounding — measured on a tiny model in tests/test_fp8_matmul.py and docs/benchmarks.md.
The speed-up is a datasheet ratio until a GPU session measures it (bench/gpu_session.sh, issue 13).
"""

from __future__ import annotations

from ..contract import Machine

# Which _scaled_mm scaling each architecture runs: rowwise (per-row activation, per-channel weight scales in
# the kernel) needs sm_90 (torch's rowwise kernels are Hopper's, CUTLASS sm90); Ada (sm_89) and consumer
# Blackwell (sm_120) take tensor-wise scales (runtime/fp8_matmul.py applies the per-channel scale after).
ROWWISE_ARCHS = ("Hopper",)
# Dense fp8 over dense fp16/bf16 tensor rate on the datasheets: H100 SXM 1979 vs 989 TFLOP/s; RTX 4090
# (Ada whitepaper, FP32 accumulate) 330.3 vs 165.2.
FP8_RATE_RATIO = 2.0
# The share of a component's FLOPs in Linear layers (what fp8 matmuls speed up). Transformer: Flux at
# 1024² has 4,608 tokens of width 3,072; attention's QK/PV products are tokens/(6 x width) = 0.25 of the
# Linear FLOPs, so Linear layers are ~80 %. UNet: its convolutions stay in 16 bits (precision.py stores
# only Linear weights in 8 bits) and take over half the FLOPs of an SD UNet: 40 %. Text encoders: almost all.
LINEAR_FLOP_SHARE = {"transformer": 0.8, "unet": 0.4, "text_encoder": 0.95}
LINEAR_FLOP_SHARE_DEFAULT = 0.0
# Quantising each Linear's input to fp8 (an amax and a cast: two passes over the activation) — an estimate,
# a few percent of a diffusion forward's time, until measured on a GPU.
ACTIVATION_QUANT_OVERHEAD = 0.05


def fp8_matmul_mode(precision: str, machine: Machine) -> str:
    """The matmul mode a component stored in `precision` runs with on `machine` ("" : dequantise per layer)."""
    if precision != "fp8" or not machine.fp8 or machine.device == "cpu":
        return ""
    return "fp8_rowwise" if machine.arch in ROWWISE_ARCHS else "fp8_tensorwise"


def fp8_matmul_overhead(kind: str) -> float:
    """Compute time relative to 16-bit weights, minus 1 (negative: faster), for a component `kind`."""
    share = LINEAR_FLOP_SHARE.get(kind, LINEAR_FLOP_SHARE_DEFAULT)
    return (1 - share) + share / FP8_RATE_RATIO + ACTIVATION_QUANT_OVERHEAD - 1


def fp8_matmul_note(mode: str, overhead: float) -> str:
    scales = "per-row activation scales" if mode == "fp8_rowwise" else "per-tensor activation scales"
    return f"fp8 matmuls (torch._scaled_mm, {scales}; {overhead:+.0%} compute vs 16-bit, datasheet estimate)"
