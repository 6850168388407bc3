"""FLUX.1 dev / schnell and Chroma (rectified-flow transformers with T5-XXL and a 16-channel VAE)."""

from .components import clip_l, denoiser, t5_xxl, vae
from .spec import ModelSpec

# Flux packs 2x2 latent patches into tokens: 1024 px -> 128 latent -> 64x64 = 4096 tokens.
_FLUX_FACTOR = 16

MODELS = (
    ModelSpec(
        name="flux-dev", family="flux", title="FLUX.1 [dev]",
        components=(denoiser("transformer", "FluxTransformer2DModel", "flux-dev-transformer", "FLUX.1 transformer"),
                    clip_l(), t5_xxl("text_encoder_2", 512), vae("flux-vae", "FLUX VAE (16 ch)")),
        width=1024, height=1024, steps=28, guidance=3.5, uses_cfg=False, latent_factor=_FLUX_FACTOR,
        scheduler="FlowMatchEulerDiscreteScheduler", pipeline="FluxPipeline",
        hf_repo="black-forest-labs/FLUX.1-dev",
        signature="'double_blocks.*' x19 + 'single_blocks.*' x38 with 'guidance_in' (guidance-distilled)",
        text_lengths={"text_encoder": 77, "text_encoder_2": 512},
    ),
    ModelSpec(
        name="flux-schnell", family="flux", title="FLUX.1 [schnell]",
        components=(denoiser("transformer", "FluxTransformer2DModel", "flux-schnell-transformer", "FLUX.1 transformer"),
                    clip_l(), t5_xxl("text_encoder_2", 256), vae("flux-vae", "FLUX VAE (16 ch)")),
        width=1024, height=1024, steps=4, guidance=0.0, uses_cfg=False, latent_factor=_FLUX_FACTOR,
        scheduler="FlowMatchEulerDiscreteScheduler", pipeline="FluxPipeline",
        hf_repo="black-forest-labs/FLUX.1-schnell",
        signature="'double_blocks.*' x19 + 'single_blocks.*' x38 without 'guidance_in'",
        text_lengths={"text_encoder": 77, "text_encoder_2": 256},
    ),
    ModelSpec(
        name="chroma", family="chroma", title="Chroma (FLUX.1-schnell derivative)",
        components=(denoiser("transformer", "ChromaTransformer2DModel", "chroma-transformer", "Chroma transformer"),
                    t5_xxl("text_encoder", 512), vae("flux-vae", "FLUX VAE (16 ch)")),
        width=1024, height=1024, steps=26, guidance=4.0, uses_cfg=True, latent_factor=_FLUX_FACTOR,
        scheduler="FlowMatchEulerDiscreteScheduler", pipeline="ChromaPipeline",
        hf_repo="lodestones/Chroma1-HD",
        signature="BFL layout with 'distilled_guidance_layer.*' and no per-block modulation",
        text_lengths={"text_encoder": 512},
    ),
)
