"""HiDream-I1 (full / dev / fast share one sparse-MoE transformer; four text encoders)."""

from .components import clip_g, clip_l, denoiser, t5_xxl, vae
from .spec import ComponentSpec, ModelSpec

MODELS = (
    ModelSpec(
        name="hidream-i1", family="hidream", title="HiDream-I1 (full / dev / fast)",
        components=(
            denoiser("transformer", "HiDreamImageTransformer2DModel", "hidream-i1-transformer", "HiDream-I1 MoE transformer"),
            clip_l("text_encoder", projection=True), clip_g("text_encoder_2"),
            t5_xxl("text_encoder_3", 128),
            ComponentSpec("text_encoder_4", "text_encoder", "transformers", "LlamaForCausalLM",
                          "llama-3.1-8b-instruct", "llama", 128, title="Llama 3.1 8B Instruct"),
            vae("flux-vae", "FLUX VAE (16 ch)"),
        ),
        width=1024, height=1024, steps=50, guidance=5.0, uses_cfg=True, latent_factor=16,
        scheduler="UniPCMultistepScheduler", pipeline="HiDreamImagePipeline",
        hf_repo="HiDream-ai/HiDream-I1-Full",
        signature="'double_stream_blocks.*' x16 + 'single_stream_blocks.*' x32 with MoE 'ff_i.experts.*'",
        notes="dev (28 steps) and fast (16 steps) are guidance-distilled variants with the same architecture.",
    ),
)
