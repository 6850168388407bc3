"""Stable Diffusion 1.x, 2.x and SDXL (UNet + CLIP + 4-channel VAE)."""

from .components import clip_g, clip_l, denoiser, openclip_h, vae
from .spec import ModelSpec

MODELS = (
    ModelSpec(
        name="sd15", family="sd1", title="Stable Diffusion 1.5",
        components=(denoiser("unet", "UNet2DConditionModel", "sd15-unet", "SD1.5 UNet"),
                    clip_l(), vae("sd-vae", "SD VAE")),
        width=512, height=512, steps=25, guidance=7.0, uses_cfg=True, latent_factor=8,
        scheduler="EulerDiscreteScheduler", pipeline="StableDiffusionPipeline",
        hf_repo="stable-diffusion-v1-5/stable-diffusion-v1-5",
        dtype="fp16",
        signature="UNet 'input_blocks.0.0.weight' [320,4|9,3,3], context dim 768, CLIP-L at 'cond_stage_model.transformer.'",
    ),
    ModelSpec(
        name="sd21", family="sd2", title="Stable Diffusion 2.1",
        components=(denoiser("unet", "UNet2DConditionModel", "sd21-unet", "SD2.1 UNet"),
                    openclip_h(), vae("sd-vae", "SD VAE")),
        width=768, height=768, steps=25, guidance=7.0, uses_cfg=True, latent_factor=8,
        scheduler="EulerDiscreteScheduler", pipeline="StableDiffusionPipeline",
        hf_repo="stabilityai/stable-diffusion-2-1",
        dtype="fp16",
        signature="UNet context dim 1024 with linear attention projections, OpenCLIP-H at 'cond_stage_model.model.'",
        notes="v-prediction at 768 px; the 512 px 'base' variant has the same weights layout.",
    ),
    ModelSpec(
        name="sdxl", family="sdxl", title="Stable Diffusion XL 1.0 (base)",
        components=(denoiser("unet", "UNet2DConditionModel", "sdxl-unet", "SDXL UNet"),
                    clip_l(), clip_g(), vae("sdxl-vae", "SDXL VAE")),
        width=1024, height=1024, steps=30, guidance=6.0, uses_cfg=True, latent_factor=8,
        scheduler="EulerDiscreteScheduler", pipeline="StableDiffusionXLPipeline",
        hf_repo="stabilityai/stable-diffusion-xl-base-1.0",
        dtype="fp16",
        signature="UNet 'label_emb.0.0.weight' [1280,2816], CLIP-L at 'conditioner.embedders.0.transformer.', bigG at 'conditioner.embedders.1.model.'",
    ),
    ModelSpec(
        name="sdxl-refiner", family="sdxl", title="Stable Diffusion XL 1.0 refiner",
        components=(denoiser("unet", "UNet2DConditionModel", "sdxl-refiner-unet", "SDXL refiner UNet"),
                    clip_g(), vae("sdxl-vae", "SDXL VAE")),
        width=1024, height=1024, steps=30, guidance=5.0, uses_cfg=True, latent_factor=8,
        scheduler="EulerDiscreteScheduler", pipeline="StableDiffusionXLImg2ImgPipeline",
        hf_repo="stabilityai/stable-diffusion-xl-refiner-1.0",
        dtype="fp16",
        signature="UNet 'label_emb.0.0.weight' [1536,2560] (context dim 1280), only bigG at 'conditioner.embedders.0.model.'",
    ),
)
