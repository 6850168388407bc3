"""Named constants of the cost model, each with where it comes from. All are overridable by callers.

Calibrated against published figures until the runtime issue's GPU benchmark measures our own
(docs/benchmarks.md); change them here, nowhere else.
"""

GiB = 2**30

# Fraction of the card's dense tensor TFLOP/s a diffusion forward sustains. FLUX.1-dev at 1024² is 59.5
# TFLOP and takes 0.53 s on an L40 (181 dense fp16 TFLOP/s): 112 TFLOP/s achieved = 0.62 (diffusers CI
# benchmarks, shared/ANCHORS.md). Used for every card and component without a measurement of its own.
COMPUTE_EFFICIENCY = 0.6
# Measured (bench/sim_vs_cuda.py, random weights with the real architectures, docs/benchmarks.md): the
# fraction of the datasheet's dense TFLOP/s each kind of component reached on an H100 SXM (989 TFLOP/s).
# A big card is harder to fill than an L40: Flux's transformer 33 %, SDXL's UNet (many small convs and
# norms) 10-14 %, the VAE decoders 11 %, T5-XXL 18 %. Applied to cards of the architecture measured only.
MEASURED_EFFICIENCY = {"Hopper": {"transformer": 0.33, "unet": 0.12, "vae": 0.11, "text_encoder": 0.18}}


def compute_efficiency(arch: str, kind: str) -> float:
    """The efficiency to plan with for a component kind (transformer / unet / vae / text_encoder)."""
    return MEASURED_EFFICIENCY.get(arch, {}).get(kind, COMPUTE_EFFICIENCY)
# CUDA context, cuBLAS/cuDNN workspaces and allocator fragmentation, outside what the simulator counts.
# The CUDA context alone is 300-500 MB on recent drivers; InvokeAI reserves 3 GB of "working memory".
DEFAULT_RESERVE_BYTES = int(0.9 * GiB)
# Placing a component for an image (bench/gpu_generate.py, H100 host, SDXL at 1024²: predicted 2.26 / 2.64 s,
# measured 3.00 / 5.80 s whole-card / 4 GB before these two terms; with them 2.9 / 5.7 s): the resident part
# is copied from pageable host memory, at about 9 GB/s, and the streamed part is first copied into pinned
# (page-locked) memory, at about 0.85 GB/s — page-locking is slow — before the link moves it at full speed.
PAGEABLE_H2D_BYTES_PER_S = 9e9
PIN_BYTES_PER_S = 0.85e9
# Per streamed unit per call: a copy issue, an event record/wait and a hook call (~0.3-0.5 ms measured
# for hooks with CUDA events in diffusers' group offloading traces); use 0.4 ms.
PER_UNIT_OVERHEAD_S = 0.0004
# Per forward call: Python and kernel-launch latency of a whole model (an SDXL UNet forward issues ~1,500
# kernels at ~3 us each). It is why CFG as one batch of 2 beats two batches of 1 when both fit.
PER_CALL_OVERHEAD_S = 0.005
# Extra compute time of weights stored in 8 bits and dequantised per layer before the matmul
# (HF "Exploring Quantization Backends": fp8 layerwise casting 13 s vs bf16 12 s; int8 15 s).
DEQUANT_OVERHEAD = {"bf16": 0.0, "fp16": 0.0, "fp8": 0.08, "int8": 0.25}
BYTES_PER_WEIGHT = {"bf16": 2, "fp16": 2, "fp8": 1, "int8": 1}
# GGUF weights already in a file are dequantised per layer on the GPU: Q8_0 Flux 15 s vs bf16 12 s,
# Q4_1 23 s (HF "Exploring Quantization Backends", H100) -> +25 % for Q8_0, +90 % for the 4/5/6-bit types.
GGUF_DEQUANT_OVERHEAD = {"Q8_0": 0.25}
GGUF_DEQUANT_OVERHEAD_DEFAULT = 0.9
# The Python process with torch, diffusers and transformers imported, plus what the OS keeps for itself.
BASELINE_RAM_BYTES = int(3.0 * GiB)
# Fraction of RAM we let pinned (page-locked) memory take; the rest stays pageable for the OS.
PINNED_RAM_FRACTION = 0.8
# Tiled VAE decode recomputes the overlaps (diffusers' default overlap 25 %): ~1.3x the FLOPs.
VAE_TILE_OVERHEAD = 1.3
VAE_TILES = (512, 256)  # tile sides tried, in pixels, largest first
# A LoRA's factors, assumed only when planning by count (`lowvram plan --loras N`); given the files, the
# planner uses their own sizes (checkpoints/lora_size.py). 200 MiB, kept from before file sizes were
# read: the order of an SDXL LoRA of rank 32-64 in 16 bits. A ControlNet has no constant here: its weights,
# activations and FLOPs are simulated from its config (catalogue/controlnet.py, plan/controlnet.py).
LORA_BYTES = 200 * 2**20
# Balanced policy: take a lossy precision when it is needed to fit or at least this much faster.
BALANCED_MIN_SPEEDUP = 1.3
