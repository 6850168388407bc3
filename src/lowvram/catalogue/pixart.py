"""PixArt-alpha and PixArt-Sigma (DiT with a T5-XXL encoder and the SD / SDXL VAE)."""

from .components import denoiser, t5_xxl, vae
from .spec import ModelSpec, PipelineCall

# clean_caption needs BeautifulSoup and ftfy: the prompt is used as typed
_PIXART_CALL = PipelineCall(fixed=(("clean_caption", False),))

MODELS = (
    ModelSpec(
        name="pixart-alpha", family="pixart", title="PixArt-α XL-2 1024",
        components=(denoiser("transformer", "PixArtTransformer2DModel", "pixart-alpha-transformer", "PixArt-α DiT"),
                    t5_xxl("text_encoder", 120), vae("sd-vae", "SD VAE")),
        width=1024, height=1024, steps=20, guidance=4.5, uses_cfg=True, latent_factor=8,
        scheduler="DPMSolverMultistepScheduler", pipeline="PixArtAlphaPipeline",
        hf_repo="PixArt-alpha/PixArt-XL-2-1024-MS",
        signature="'blocks.*' x28 DiT with resolution / aspect-ratio embedders ('csize_embedder', 'ar_embedder')",
        call=_PIXART_CALL,
    ),
    ModelSpec(
        name="pixart-sigma", family="pixart", title="PixArt-Σ XL-2 1024",
        components=(denoiser("transformer", "PixArtTransformer2DModel", "pixart-sigma-transformer", "PixArt-Σ DiT"),
                    t5_xxl("text_encoder", 300), vae("sdxl-vae", "SDXL VAE")),
        width=1024, height=1024, steps=20, guidance=4.5, uses_cfg=True, latent_factor=8,
        scheduler="DPMSolverMultistepScheduler", pipeline="PixArtSigmaPipeline",
        hf_repo="PixArt-alpha/PixArt-Sigma-XL-2-1024-MS",
        signature="'blocks.*' x28 DiT without resolution / aspect-ratio embedders",
        call=_PIXART_CALL,
    ),
)
