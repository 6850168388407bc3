"""DeepFloyd IF: pixel-space cascade. Stage I (64 px) and II (256 px) share a T5-XXL encoder;
stage III is the Stable Diffusion x4 upscaler (256 -> 1024 px) with its own OpenCLIP-H and VAE."""

from .components import denoiser, openclip_h, t5_xxl, vae
from .spec import ModelSpec

MODELS = (
    ModelSpec(
        name="deepfloyd-if", family="deepfloyd-if", title="DeepFloyd IF I-XL + II-L + SD x4 upscaler",
        components=(
            # pixel_divisor: the final 1024 px image is 64 px at stage I and 256 px at stage II.
            denoiser("unet", "UNet2DConditionModel", "deepfloyd-if-i-xl-unet", "IF stage I XL UNet", 16, "I"),
            denoiser("unet_2", "UNet2DConditionModel", "deepfloyd-if-ii-l-unet", "IF stage II L UNet", 4, "II"),
            # stage III denoises 256x256 latents for a 1024 px image, so its divisor is 4 as well.
            denoiser("unet_3", "UNet2DConditionModel", "sd-x4-upscaler-unet", "SD x4 upscaler UNet", 4, "III"),
            t5_xxl("text_encoder", 77, stage="I+II"),
            openclip_h("text_encoder_3"),
            vae("sd-x4-upscaler-vae", "x4 upscaler VAE", stage="III"),
        ),
        width=1024, height=1024, steps=100, guidance=7.0, uses_cfg=True, latent_factor=16,
        scheduler="DDPMScheduler", pipeline="IFPipeline",
        hf_repo="DeepFloyd/IF-I-XL-v1.0",
        signature="diffusers UNet with 'encoder_hid_proj' (T5 4096 -> cross dim) and 3 (stage I) or 6 (stage II) input channels",
        text_lengths={"text_encoder": 77, "text_encoder_3": 77},
        notes="steps: 100 for stage I, 50 for stage II, 75 for stage III in the reference pipelines; the planner counts each stage.",
    ),
)
