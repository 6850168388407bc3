"""FLUX.1 dev / schnell and Chroma (rectified-flow transformers with T5-XXL and a 16-channel VAE)."""

from .components import clip_l, denoiser, t5_xxl, vae
from .quants import GgufRepo
from .spec import ModelSpec, PipelineCall

# Flux ControlNet pipelines take the condition image as `control_image` (SD's take `image`).
_FLUX_CALL = PipelineCall(control_image_arg="control_image")

# Flux packs 2x2 latent patches into tokens: 1024 px -> 128 latent -> 64x64 = 4096 tokens.
_FLUX_FACTOR = 16
# city96's GGUF conversions of the BFL transformer (ComfyUI-GGUF's tools): every quant of both models.
_CITY96_FLUX_QUANTS = ("Q8_0", "Q6_K", "Q5_1", "Q5_K_S", "Q5_0", "Q4_1", "Q4_K_S", "Q4_0", "Q3_K_S", "Q2_K")

MODELS = (
    ModelSpec(
        name="flux-dev", family="flux", title="FLUX.1 [dev]",
        components=(denoiser("transformer", "FluxTransformer2DModel", "flux-dev-transformer", "FLUX.1 transformer"),
                    clip_l(), t5_xxl("text_encoder_2", 512), vae("flux-vae", "FLUX VAE (16 ch)")),
        width=1024, height=1024, steps=28, guidance=3.5, uses_cfg=False, latent_factor=_FLUX_FACTOR,
        scheduler="FlowMatchEulerDiscreteScheduler", pipeline="FluxPipeline",
        hf_repo="black-forest-labs/FLUX.1-dev",
        signature="'double_blocks.*' x19 + 'single_blocks.*' x38 with 'guidance_in' (guidance-distilled)",
        gguf=GgufRepo("city96/FLUX.1-dev-gguf", "flux1-dev-{quant}.gguf", _CITY96_FLUX_QUANTS), call=_FLUX_CALL,
    ),
    ModelSpec(
        name="flux-schnell", family="flux", title="FLUX.1 [schnell]",
        components=(denoiser("transformer", "FluxTransformer2DModel", "flux-schnell-transformer", "FLUX.1 transformer"),
                    clip_l(), t5_xxl("text_encoder_2", 256), vae("flux-vae", "FLUX VAE (16 ch)")),
        width=1024, height=1024, steps=4, guidance=0.0, uses_cfg=False, latent_factor=_FLUX_FACTOR,
        scheduler="FlowMatchEulerDiscreteScheduler", pipeline="FluxPipeline",
        hf_repo="black-forest-labs/FLUX.1-schnell",
        signature="'double_blocks.*' x19 + 'single_blocks.*' x38 without 'guidance_in'",
        gguf=GgufRepo("city96/FLUX.1-schnell-gguf", "flux1-schnell-{quant}.gguf", _CITY96_FLUX_QUANTS), call=_FLUX_CALL,
    ),
    ModelSpec(
        name="chroma", family="chroma", title="Chroma (FLUX.1-schnell derivative)",
        components=(denoiser("transformer", "ChromaTransformer2DModel", "chroma-transformer", "Chroma transformer"),
                    t5_xxl("text_encoder", 512), vae("flux-vae", "FLUX VAE (16 ch)")),
        width=1024, height=1024, steps=26, guidance=4.0, uses_cfg=True, latent_factor=_FLUX_FACTOR,
        scheduler="FlowMatchEulerDiscreteScheduler", pipeline="ChromaPipeline",
        hf_repo="lodestones/Chroma1-HD",
        signature="BFL layout with 'distilled_guidance_layer.*' and no per-block modulation",
    ),
)
