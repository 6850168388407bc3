"""The contract between planner and runtime: plain immutable data that serialises to JSON.

A bottom layer: the planner writes a Plan, the runtime carries it out and never re-decides it, and the
CLI, the server, tests and benchmarks read the same object — none of them imports the other for it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

POLICIES = ("lossless", "balanced", "fast")
# Fraction of RAM the runtime lets pinned (page-locked) memory take — the rest stays pageable for the OS
# (runtime/streaming.py; the planner does not read it).
PINNED_RAM_FRACTION = 0.8
# Pinned host buffers that weights streamed from pageable memory (past the pinned cap, or mapped from disk)
# pass through on a GPU, each the size of the largest such unit (runtime/buffers.py StagingBuffers): host RAM
# a disk-backed plan still takes (plan/planner.py counts it).
STAGING_BUFFERS = 2
# Device buffers a streamed component's units are copied into, each the size of its largest streamed unit
# (runtime/buffers.py BufferPool): one computing while the next is copied. The planner may give a component
# more (ComponentPlan.stream_buffers, plan/interleave.py) so the link can run further ahead of the compute.
STREAM_BUFFERS = 2


@dataclass(frozen=True)
class Workload:
    width: int
    height: int
    batch: int = 1
    steps: int = 28
    guidance: bool = True  # classifier-free guidance on (only for models that use CFG)
    loras: int = 0  # how many LoRAs (set from lora_bytes when the files are known)
    controlnet: bool = False
    img2img: bool = False
    # Each LoRA's low-rank factors in bytes at the compute dtype (bf16/fp16, 2 bytes per element), read
    # from its file's header (checkpoints/lora_size.py). Empty when planning by count alone: the planner
    # then assumes cost.LORA_BYTES per LoRA.
    lora_bytes: tuple[int, ...] = ()
    # A diffusers ControlNet folder the plan sizes from its own config.json and weights; "" with
    # controlnet=True: the catalogue's published ControlNet for the model (catalogue/controlnet.py).
    controlnet_path: str = ""
    # How many images the loaded weights serve before they are unloaded: 1 for a one-shot `generate`; a
    # long-lived Session or server passes a large number (e.g. 100). Pinning the host copy of streamed
    # weights happens once per load, so the planner charges each image 1/images_per_load of it.
    images_per_load: int = 1

    def __post_init__(self) -> None:
        # frozen: normalise through object.__setattr__ (a JSON round trip gives a list, not a tuple)
        sizes = tuple(int(b) for b in self.lora_bytes)
        if sizes and self.loras not in (0, len(sizes)):
            raise ValueError(f"loras={self.loras} but {len(sizes)} LoRA sizes were given")
        object.__setattr__(self, "lora_bytes", sizes)
        object.__setattr__(self, "loras", len(sizes) or self.loras)
        if self.controlnet_path:
            object.__setattr__(self, "controlnet", True)
        if int(self.images_per_load) < 1:
            raise ValueError(f"images_per_load={self.images_per_load}: the loaded weights serve at least one image")
        object.__setattr__(self, "images_per_load", int(self.images_per_load))


@dataclass(frozen=True)
class Machine:
    name: str
    vram_bytes: int
    ram_bytes: int
    link_bytes_per_s: float  # pinned host -> device bandwidth
    tflops: float  # dense fp16/bf16 tensor TFLOP/s
    bf16: bool = True
    fp8: bool = False
    cpu_tflops: float = 0.3  # what a desktop CPU sustains on a transformer forward (bf16/fp32 GEMM)
    disk_bytes_per_s: float = 2.0e9  # NVMe sequential read, for disk-backed weights
    arch: str = ""  # GPU architecture ("Ada", "Hopper"...): selects measured compute efficiencies
    # Where the plan runs: "cuda", or "cpu" — then vram_bytes is the RAM left to weights and activations,
    # `tflops` the CPU's sustained fp32 TFLOP/s on a diffusion forward, and the link is memory bandwidth.
    device: str = "cuda"


@dataclass(frozen=True)
class Policy:
    quality: str = "lossless"  # lossless / balanced / fast
    reserve_bytes: int = 0  # 0: the documented default (cost.DEFAULT_RESERVE_BYTES)
    # First-block step caching (lossy, opt-in, `--step-cache THRESHOLD` under quality "fast"): the relative
    # change of the first block's residual below which a step reuses the other blocks' last residual. 0: off.
    step_cache: float = 0.0

    def __post_init__(self) -> None:
        if not (self.step_cache >= 0.0):  # also NaN
            raise ValueError(f"step_cache={self.step_cache!r}: a threshold >= 0")
        if self.step_cache and self.quality != "fast":
            raise ValueError(f"step_cache={self.step_cache} is lossy: it needs quality 'fast', not {self.quality!r}")


@dataclass(frozen=True)
class ComponentPlan:
    name: str
    role: str
    params: int
    stored_bytes: int  # where the weights are stored: the file's dtype (fp32/bf16/fp16) or its GGUF type's bytes
    placement: str  # resident / streamed / cpu
    precision: str  # storage precision on the device: fp32 / bf16 / fp16 / fp8 / int8, or a file's GGUF type
    compute_dtype: str  # fp32 / bf16 / fp16 (fp32: a CPU, or weights widened bit-exactly, plan/dtypes.py)
    vram_bytes: int  # weights this component holds on the GPU (resident part + prefetch buffers)
    resident_units: int = 0  # for streamed: K units stay on the GPU (the first K, unless resident_indices)
    total_units: int = 0
    streamed_bytes: int = 0  # bytes copied host -> device per call
    activation_bytes: int = 0  # simulated activation peak of one call
    source: str = "ram"  # where non-resident weights live: pinned "ram", or "disk" (memory-mapped)
    seconds_per_call: float = 0.0
    calls_per_image: int = 1  # denoiser: steps (x2 with split CFG); others: 1
    notes: str = ""
    weight_bytes: int = 0  # all its weights at `precision`: what the executor checks the loaded module against
    # How its fp8 Linear weights multiply: "" (dequantised to compute_dtype per layer, runtime/precision.py),
    # "fp8_rowwise" or "fp8_tensorwise" (torch._scaled_mm on fp8 tensor cores, runtime/fp8_matmul.py).
    matmul: str = ""
    # denoiser: torch.compile its repeated blocks (runtime/regional_compile.py), chosen where the compile time
    # pays back over the images a load serves (plan/compile_choice.py)
    compile_blocks: bool = False
    # predicted seconds to read its weights from the file into `precision` (plan/load_time.py); generate's
    # report prints the measured time beside it
    load_seconds: float = 0.0
    # streamed: which units stay on the GPU, when not the first `resident_units` — spread among the streamed
    # ones so copies overlap compute (plan/interleave.py); () means the first `resident_units`
    resident_indices: tuple[int, ...] = ()
    compute_seconds: float = 0.0  # one call's compute alone (what copies can hide behind), where the planner knows it
    # streamed: the device buffers its streamed units go through (counted in vram_bytes); more than
    # STREAM_BUFFERS where the copy timeline says the link then keeps ahead of the compute (plan/interleave.py)
    stream_buffers: int = STREAM_BUFFERS

    def resident_set(self) -> set[int]:
        """The unit indices a streamed component keeps on the GPU: `resident_indices`, or the first
        `resident_units` when the plan did not spread them."""
        return set(self.resident_indices) if self.resident_indices else set(range(self.resident_units))


@dataclass(frozen=True)
class Plan:
    model: str
    policy: str
    fits: bool
    workload: Workload
    machine: Machine
    components: tuple[ComponentPlan, ...]
    attention: str  # sdpa / chunked
    attention_chunk: int
    cfg_mode: str  # "batch" (one batch of 2), "split" (two batches of 1), "none"
    vae_tile: int  # 0: full decode; else tile side in pixels
    peak_vram_bytes: int
    peak_ram_bytes: int
    seconds_per_step: float
    seconds_per_image: float
    reserve_bytes: int
    decisions: tuple[str, ...] = ()  # one line per decision, saying why
    rejected: tuple[dict, ...] = ()  # alternatives considered, with their predicted time and memory
    lossy_reason: str = ""  # why the plan lowers precision (or why lossless could not fit)
    smallest_fitting: dict = field(default_factory=dict)  # when fits is False: the smallest machine that fits
    # Why this plan may look slower than a neighbour (another VRAM tier, a model with the same denoiser),
    # each named by a decision line: "placement" (a component whose steps are slower but whose placement
    # per image is cheaper was chosen), "ram" (a faster option needs more RAM than is left), "policy" (the
    # balanced policy kept lossless weights although 8-bit ones are faster). See plan/explain.py.
    tradeoffs: tuple[str, ...] = ()
    # First-block step caching of the denoiser (runtime/step_cache.py): its threshold (0: off), and the
    # fraction of denoiser calls the planner expects it to skip — an estimate (plan/step_cache.py), which
    # seconds_per_step already counts; the runtime reports the real fraction.
    step_cache: float = 0.0
    step_cache_skip: float = 0.0
    # True only for the page's quick readout (plan/estimated.py): some simulations were estimated from the
    # same component's exact answers at nearby sizes; what generates always plans from exact ones.
    estimated: bool = False
    estimate_note: str = ""  # which answers were estimated, from which sizes ("" when exact)

    def to_json(self) -> dict:
        d = asdict(self)
        d["components"] = [asdict(c) for c in self.components]
        return d
