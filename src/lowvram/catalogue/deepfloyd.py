"""DeepFloyd IF: pixel-space cascade. Stage I (64 px) and II (256 px) share a T5-XXL encoder;
stage III is the Stable Diffusion x4 upscaler (256 -> 1024 px) with its own OpenCLIP-H and VAE."""

from __future__ import annotations

from dataclasses import dataclass, field

from .components import denoiser, openclip_h, t5_xxl, vae
from .spec import ModelSpec


@dataclass(frozen=True)
class Stage:
    """One stage of the cascade as it is published: its own hub repo, a diffusers folder whose
    model_index.json names `pipeline`. Defaults are the reference pipelines' (diffusers' IF docs)."""

    name: str  # "I", "II", "III"
    pipeline: str  # the diffusers pipeline class in the folder's model_index.json
    repo: str  # where `lowvram pull deepfloyd-if` gets it
    # pipeline attribute -> catalogue (plan) component name, for what this stage loads. Stage II's repo
    # also carries a copy of the T5; it is not listed, so it is never loaded (stage I's serves both).
    components: dict[str, str] = field(default_factory=dict)
    steps: int = 50
    guidance: float = 7.0
    noise_level: int | None = None  # how much noise the stage adds to its input image (II and III)

    @property
    def folder(self) -> str:
        """The folder name the hub repo gets in a cascade folder (its repo name)."""
        return self.repo.split("/")[-1]


STAGES = (
    Stage("I", "IFPipeline", "DeepFloyd/IF-I-XL-v1.0", {"text_encoder": "text_encoder", "unet": "unet"},
          steps=100, guidance=7.0),
    Stage("II", "IFSuperResolutionPipeline", "DeepFloyd/IF-II-L-v1.0", {"unet": "unet_2"},
          steps=50, guidance=4.0, noise_level=250),
    # noise level 100 for the upscaler as in diffusers' IF example (its own pipeline default is 20)
    Stage("III", "StableDiffusionUpscalePipeline", "stabilityai/stable-diffusion-x4-upscaler",
          {"text_encoder": "text_encoder_3", "unet": "unet_3", "vae": "vae"}, steps=75, guidance=9.0, noise_level=100),
)

MODELS = (
    ModelSpec(
        name="deepfloyd-if", family="deepfloyd-if", title="DeepFloyd IF I-XL + II-L + SD x4 upscaler",
        components=(
            # pixel_divisor: the final 1024 px image is 64 px at stage I and 256 px at stage II.
            denoiser("unet", "UNet2DConditionModel", "deepfloyd-if-i-xl-unet", "IF stage I XL UNet", 16, "I"),
            # stages II and III run 50 and 75 steps to stage I's 100 (the reference ratio generation uses)
            denoiser("unet_2", "UNet2DConditionModel", "deepfloyd-if-ii-l-unet", "IF stage II L UNet", 4, "II",
                     step_ratio=STAGES[1].steps / STAGES[0].steps),
            # stage III denoises 256x256 latents for a 1024 px image, so its divisor is 4 as well.
            denoiser("unet_3", "UNet2DConditionModel", "sd-x4-upscaler-unet", "SD x4 upscaler UNet", 4, "III",
                     step_ratio=STAGES[2].steps / STAGES[0].steps),
            t5_xxl("text_encoder", 77, stage="I+II"),
            openclip_h("text_encoder_3"),
            vae("sd-x4-upscaler-vae", "x4 upscaler VAE", stage="III"),
        ),
        # steps and guidance are stage I's; stages II and III have their own (STAGES).
        # latent_factor: stage I works at 1/16 of the final side and its UNet halves that 3 times (its
        # resnet up-blocks cannot restore odd sizes), so a side must be a multiple of 16 x 8 = 128.
        width=1024, height=1024, steps=STAGES[0].steps, guidance=STAGES[0].guidance, uses_cfg=True, latent_factor=128,
        scheduler="DDPMScheduler", pipeline="IFPipeline",
        hf_repo=STAGES[0].repo, dtype="fp16",
        signature="diffusers UNet with 'encoder_hid_proj' (T5 4096 -> cross dim) and 3 (stage I) or 6 (stage II) input channels",
        notes="steps: 100 for stage I, 50 for stage II, 75 for stage III in the reference pipelines; --steps sets "
              "stage I's and the other two follow in that ratio.",
    ),
)

