"""Stable Diffusion 3 / 3.5 (MMDiT + CLIP-L + CLIP-G + T5-XXL + 16-channel VAE)."""

from .components import clip_g, clip_l, denoiser, t5_xxl, vae
from .spec import ModelSpec


def _sd3(name: str, title: str, config: str, signature: str, steps: int, guidance: float, repo: str) -> ModelSpec:
    return ModelSpec(
        name=name, family="sd3", title=title,
        components=(denoiser("transformer", "SD3Transformer2DModel", config, title.replace("Stable Diffusion", "SD") + " MMDiT"),
                    clip_l(projection=True), clip_g(), t5_xxl("text_encoder_3", 256), vae("sd3-vae", "SD3 VAE (16 ch)")),
        width=1024, height=1024, steps=steps, guidance=guidance, uses_cfg=True, latent_factor=8,
        scheduler="FlowMatchEulerDiscreteScheduler", pipeline="StableDiffusion3Pipeline", hf_repo=repo,
        signature=signature,
        # CLIP-L and CLIP-G outputs are concatenated (77 tokens) next to 256 T5 tokens: 333 context tokens.
        text_lengths={"text_encoder": 77, "text_encoder_2": 77, "text_encoder_3": 256},
    )


MODELS = (
    _sd3("sd3-medium", "Stable Diffusion 3 Medium", "sd3-medium-transformer",
         "MMDiT 'joint_blocks.*' x24 without 'ln_q' / 'attn2'", 28, 7.0,
         "stabilityai/stable-diffusion-3-medium-diffusers"),
    _sd3("sd35-medium", "Stable Diffusion 3.5 Medium", "sd35-medium-transformer",
         "MMDiT-X: 'joint_blocks.*' x24 with 'x_block.attn2' (dual attention) and 'ln_q' (QK norm)", 40, 4.5,
         "stabilityai/stable-diffusion-3.5-medium"),
    _sd3("sd35-large", "Stable Diffusion 3.5 Large", "sd35-large-transformer",
         "MMDiT 'joint_blocks.*' x38 with 'ln_q' (QK norm)", 28, 3.5,
         "stabilityai/stable-diffusion-3.5-large"),
)
