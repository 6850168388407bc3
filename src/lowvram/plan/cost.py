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
    if arch == CPU_ARCH:  # the CPU's figure is already what a diffusion forward sustains (measured)
        return 1.0
    return MEASURED_EFFICIENCY.get(arch, {}).get(kind, COMPUTE_EFFICIENCY)


# --- the CPU as the machine (no usable GPU) ---
CPU_ARCH = "cpu"
# The dtype a CPU computes in: fp32. Measured on this project's 2-core AMD EPYC (AVX2, no AVX-512 BF16 /
# AMX; docs/benchmarks.md): a 1024² matmul sustains 0.124 TFLOP/s in fp32 and 0.0008 in bf16 — without
# native bf16 instructions every bf16 product is converted to fp32 and back in scalar code, ~150x slower.
# fp32 is also a bit-exact widening of fp16/bf16 files. CPUs with AMX (Sapphire Rapids and later) would
# invert this; plans for them want a measurement of their own (bench/cpu_real_sd15.py).
CPU_COMPUTE_DTYPE = "fp32"
# Sustained fp32 TFLOP/s of a CPU on a real-size diffusion forward, measured on this project's idle 2-core VM
# (bench/cpu_real_sd15.py, docs/benchmarks.md): real-size SD1.5 with CFG at 512², 1.354 TFLOP per step (simulated),
# 18.2 s/step = 0.074 TFLOP/s (at 128², 0.090 TFLOP in 2.82 s: 0.032 — small tensors spend more in overheads).
# A desktop CPU with more cores sustains several times more: give it with --tflops.
CPU_FP32_TFLOPS = 0.074
# "Streaming" on a CPU copies a unit from its host tensor into a reusable buffer: a single-threaded
# memcpy on a desktop or server core moves ~10 GB/s (STREAM copy figures for one core).
CPU_COPY_BYTES_PER_S = 10e9
# CUDA context, cuBLAS/cuDNN workspaces and allocator fragmentation, outside what the simulator counts.
# The CUDA context alone is 300-500 MB on recent drivers; InvokeAI reserves 3 GB of "working memory".
DEFAULT_RESERVE_BYTES = int(0.9 * GiB)
# Placing a component for an image (bench/gpu_generate.py, H100 host, SDXL at 1024²: predicted 2.26 / 2.64 s,
# measured 3.00 / 5.80 s whole-card / 4 GB before these two terms; with them 2.9 / 5.7 s): the resident part
# is copied from pageable host memory, at about 9 GB/s, and the streamed part is first copied into pinned
# (page-locked) memory, at about 0.85 GB/s — page-locking is slow — before the link moves it at full speed.
# Measured when the runtime pinned tensor by tensor (torch's pin_memory: cudaHostAlloc of a power-of-two
# block, then a copy). The runtime now copies each streamed unit into one exactly-sized anonymous mapping
# and registers it (runtime/host_buffer.py): not yet measured on a GPU; bench/gpu_generate.py's placement
# rows will refit this in the next GPU session.
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
DEQUANT_OVERHEAD = {"fp32": 0.0, "bf16": 0.0, "fp16": 0.0, "fp8": 0.08, "int8": 0.25}
BYTES_PER_WEIGHT = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1}
# Simulations run in 16 bits (fp16 and bf16 share one, simulate/api.py); a component computing in fp32
# runs the same graph with every floating tensor twice the size, so its activations are the 16-bit
# figure times this. Scaling instead of simulating again keeps planning a CPU machine (all fp32) within
# the shipped answers: under a second instead of minutes of fake-tensor runs.
FP32_ACTIVATION_SCALE = 2
# A GPU computing in fp32 (a bf16 checkpoint on a card without bf16, an fp16-overflowing VAE) runs off
# the tensor cores: the plain fp32 rate is 1/2 (Ada, RTX 4090: 82.6 vs 165 TFLOP/s) to 1/16 (A100: 19.5
# vs 312) of the dense fp16 tensor rate on NVIDIA's datasheets; cuDNN's convolutions use TF32 (1/2).
# Plan with 1/4.
FP32_GPU_RATE = 0.25
# GGUF weights already in a file are dequantised per layer on the GPU: Q8_0 Flux 15 s vs bf16 12 s,
# Q4_1 23 s (HF "Exploring Quantization Backends", H100) -> +25 % for Q8_0, +90 % for the 4/5/6-bit types.
GGUF_DEQUANT_OVERHEAD = {"Q8_0": 0.25}
GGUF_DEQUANT_OVERHEAD_DEFAULT = 0.9
# The Python process with torch, diffusers and transformers imported, plus what the OS keeps for itself.
BASELINE_RAM_BYTES = int(3.0 * GiB)
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
# --- loading the weights (runtime/loading.py), before the first call ---
# Loading runs the file's read and the conversion into the planned precision side by side (a reader
# thread), so a component takes max(file bytes / disk speed, conversion time). Conversion throughputs of
# runtime/loading.py measured by `bench/load_speed.py --gb 1 --repeats 5 --threads 1` on this project's shared
# 2-core VM, 2026-12-08, load average 1.1 (file in the page cache, so the read is a memory copy;
# docs/benchmarks.md), direct loads of 512 M bf16 weights, wall: into bf16 (read straight into place) 0.60 s
# = 1.79 GB/s; cast into fp32 1.27 s = 423 M elements/s (into fp16 0.81 s = 663 M/s: plan with the slower,
# the CPU plans' cast); quantised into fp8 0.66 s = 813 M/s (int8 0.50 s = 1074 M/s: plan with fp8's). On a
# busy machine, where the reader thread and the conversion cannot overlap, loads take up to ~1.5x as long.
LOAD_COPY_BYTES_PER_S = 1.79e9
LOAD_CAST_ELEMENTS_PER_S = 423e6
LOAD_QUANTISE_ELEMENTS_PER_S = 813e6
