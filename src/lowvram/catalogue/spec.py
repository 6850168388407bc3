"""What a model *is*, independent of any file: the data every later layer reads.

A :class:`ModelSpec` lists the components of a text-to-image model (denoiser, text encoders, VAE),
the library class and shipped config of each, and the defaults a user expects. Nothing here touches
a device or reads weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from .quants import GgufRepo

# a ControlNet is no part of a ModelSpec: a workload adds it, and it runs in its denoiser's phase
ROLES = ("denoiser", "text_encoder", "vae", "controlnet")


@dataclass(frozen=True)
class ComponentSpec:
    """One module of a pipeline, e.g. the SDXL UNet or the T5-XXL text encoder."""

    name: str  # the diffusers pipeline attribute: "unet", "transformer", "text_encoder_2", "vae"
    role: str  # one of ROLES
    library: str  # "diffusers" or "transformers"
    class_name: str  # e.g. "UNet2DConditionModel", "T5EncoderModel"
    # name of the JSON file in catalogue/configs (without .json), or the path of a config.json outside the
    # package (a user's ControlNet folder)
    config: str
    tokenizer: str | None = None  # tokenizer kind for text encoders: "clip", "t5", "llama", "qwen2"
    max_tokens: int | None = None  # sequence length the pipeline feeds a text encoder
    # Spatial size of this component's input relative to the final image side: 8 for an SD UNet
    # (1024 px -> 128 latent), 16 for DeepFloyd IF stage I (1024 px -> 64 px). None: not spatial.
    pixel_divisor: int | None = None
    stage: str = ""  # for multi-stage models (DeepFloyd IF): which stage this component serves
    step_ratio: float = 1.0  # a denoiser's steps per step the user asks for (IF's later stages run fewer)
    title: str = ""  # human name: "CLIP ViT-L/14", "T5 v1.1 XXL encoder"

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}")
        if self.library not in ("diffusers", "transformers"):
            raise ValueError(f"unknown library {self.library!r}")


@dataclass(frozen=True)
class PipelineCall:
    """How a family's diffusers pipeline is called: the keyword arguments that differ between families."""

    guidance_args: tuple[str, ...] = ("guidance_scale",)  # the keyword(s) that receive the guidance value
    # a negative prompt the pipeline needs even when the user gave none (Qwen-Image's "true" CFG runs
    # its second pass only with one); None: pass a negative prompt only when given, and only with CFG
    negative_default: str | None = None
    fixed: tuple[tuple[str, object], ...] = ()  # always passed, e.g. PixArt's clean_caption=False
    control_image_arg: str = "image"  # where a ControlNet's condition image goes


@dataclass(frozen=True)
class ModelSpec:
    """A catalogue entry: an architecture with its components and generation defaults."""

    name: str  # catalogue id, e.g. "flux-dev"
    family: str  # "sd1", "sd2", "sdxl", "sd3", "flux", "pixart", "hidream", "deepfloyd-if", ...
    title: str
    components: tuple[ComponentSpec, ...]
    width: int
    height: int
    steps: int
    guidance: float
    # Classifier-free guidance runs the denoiser on a batch of 2 (cond + uncond). Guidance-distilled
    # models (Flux dev/schnell) take guidance as an input instead and run one batch.
    uses_cfg: bool
    latent_factor: int  # pixels per latent cell along a side (VAE downscale x patching)
    scheduler: str  # diffusers scheduler class the reference pipeline uses
    pipeline: str  # diffusers pipeline class
    hf_repo: str  # where `lowvram pull` gets it (diffusers layout)
    signature: str  # how inspection recognises it in a checkpoint, in words
    notes: str = ""
    gguf: GgufRepo | None = None  # published GGUF quants of the denoiser, where they exist
    call: PipelineCall = PipelineCall()  # the family's pipeline keyword arguments
    # The dtype its weights are published in for inference, planned when no file is given (a file's own
    # dtypes win): bf16 for the recent models; fp16 where the repo's inference weights are the fp16
    # variant (SD1.x/2.x/SDXL `variant="fp16"`, DeepFloyd IF `fp16`).
    dtype: str = "bf16"

    def component(self, name: str) -> ComponentSpec:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no component {name!r}")

    def by_role(self, role: str) -> tuple[ComponentSpec, ...]:
        return tuple(c for c in self.components if c.role == role)

    @property
    def text_lengths(self) -> dict[str, int]:
        """Tokens per text encoder output: what the denoiser reads from each."""
        return {c.name: c.max_tokens for c in self.by_role("text_encoder")}
