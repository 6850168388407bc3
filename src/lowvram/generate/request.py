"""What a front end asks a Session for, and what it gets back: plain data, shared by the CLI and the server."""

from __future__ import annotations

from dataclasses import dataclass, field

SEED_RANDOM = -1  # A1111's meaning: pick a random seed, and report the one used
MAX_BATCH = 64  # images per request: a batch past this is a typo, not a workload
MAX_STEPS = 1000  # denoising steps per image
MAX_GUIDANCE = 100.0  # A1111's slider stops at 30; anything past 100 only saturates the image
MAX_SEED = 2**63 - 1 - 64  # torch generators take 64-bit seeds; a batch adds its position to the seed


@dataclass
class GenerateRequest:
    prompt: str
    model: str
    negative: str = ""
    width: int | None = None  # None: the model's default (img2img: the init image's size)
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int = 0  # -1: random
    batch: int = 1
    sampler: str | None = None  # A1111 name ("Euler a") or the CLI's short name ("euler_a")
    schedule: str | None = None  # A1111 schedule type ("Karras"); None: the sampler's default
    output: str | None = "lowvram.png"  # None: keep the images in memory only (the server encodes them)
    quiet: bool = False
    init_image: object = None  # img2img: a path or a PIL image (with `strength`), or inpaint with `mask`
    strength: float = 0.75
    mask: object = None  # a path or a PIL image
    config: str | None = None  # for single files: a diffusers folder with the configs and tokenizers
    loras: list = field(default_factory=list)  # [(path, weight)]
    controlnet: str | None = None  # a diffusers ControlNet folder
    control_image: object = None  # a path or a PIL image
    control_scale: float = 1.0
    control_start: float = 0.0  # the fraction of the steps the ControlNet starts and stops acting at (diffusers'
    control_end: float = 1.0  # control_guidance_start / _end, A1111's guidance_start / guidance_end)
    control_label: str | None = None  # the ControlNet's name in infotext (the server's title); default: the folder's
    models_dir: str | None = None  # a ComfyUI / A1111 models/ tree to find the model and its parts in
    quality: str | None = None  # lossless / balanced / fast; None: the Session's default
    resize_mode: int = 1  # init image to another size: 0 stretch, 1 crop and resize, 2 resize and pad (A1111's)
    model_label: str | None = None  # the name shown in infotext (the server's model name); default: the catalogue id


@dataclass
class GenerateResult:
    paths: list[str]
    plan: object
    seconds: float
    peak_vram_bytes: int
    peak_ram_bytes: int
    interrupted_at: int | None = None
    replans: list[str] = field(default_factory=list)
    load_seconds: float = 0.0  # reading weights into their planned places (0 when the model stayed loaded)
    run_seconds: float = 0.0  # the pipeline call: what the plan's seconds_per_image predicts
    images: list = field(default_factory=list)  # float RGB arrays in [0, 1]
    infotexts: list[str] = field(default_factory=list)  # A1111 `parameters`, one per image
    seeds: list[int] = field(default_factory=list)  # the seed of each image
    reused: bool = False  # the model was already loaded (no weights read)
    device: str = ""  # where it ran: "cuda" / "cpu"
    notes: list[str] = field(default_factory=list)  # what the session decided for the user (sizes, seeds)
    # first-block step caching (plan.step_cache > 0): denoiser calls this run made, and how many it skipped
    step_cache_calls: int = 0
    step_cache_skipped: int = 0
    # measured seconds to load each component (the plan's names; empty when the model stayed loaded), to
    # set beside the plan's ComponentPlan.load_seconds
    component_load_seconds: dict = field(default_factory=dict)


def load_times_line(plan, measured: dict[str, float]) -> str:
    """`generate`'s report of loading: each component's measured seconds beside the plan's prediction
    (ComponentPlan.load_seconds), in the plan's order; "" when nothing was loaded (the model stayed loaded)."""
    parts = [f"{c.name} {measured[c.name]:.1f} s (predicted {c.load_seconds:.1f} s)"
             for c in plan.components if c.name in measured]
    return "loading: " + ", ".join(parts) if parts else ""
