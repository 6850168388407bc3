"""Stable Diffusion 3 / 3.5 (MMDiT + CLIP-L + CLIP-G + T5-XXL + 16-channel VAE)."""

from .components import clip_g, clip_l, denoiser, t5_xxl, vae
from .quants import GgufRepo
from .spec import ModelSpec

# city96's GGUF conversions of SD3.5 Large: legacy 32-weight blocks only — its 2432-wide rows are not a
# multiple of the 256 weights a K-quant block needs.
_SD35_LARGE_GGUF = GgufRepo("city96/stable-diffusion-3.5-large-gguf", "sd3.5_large-{quant}.gguf",
                            ("Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0"))


def _sd3(name: str, title: str, config: str, signature: str, steps: int, guidance: float, repo: str,
         gguf: GgufRepo | None = None) -> ModelSpec:
    return ModelSpec(
        name=name, family="sd3", title=title,
        components=(denoiser("transformer", "SD3Transformer2DModel", config, title.replace("Stable Diffusion", "SD") + " MMDiT"),
                    clip_l(projection=True), clip_g(), t5_xxl("text_encoder_3", 256), vae("sd3-vae", "SD3 VAE (16 ch)")),
        width=1024, height=1024, steps=steps, guidance=guidance, uses_cfg=True, latent_factor=8,
        scheduler="FlowMatchEulerDiscreteScheduler", pipeline="StableDiffusion3Pipeline", hf_repo=repo,
        signature=signature,
        # CLIP-L and CLIP-G outputs are concatenated (77 tokens) next to 256 T5 tokens: 333 context tokens.
        gguf=gguf,
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
         "stabilityai/stable-diffusion-3.5-large", _SD35_LARGE_GGUF),
)
