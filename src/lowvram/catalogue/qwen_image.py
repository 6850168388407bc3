"""Qwen-Image (20 B MMDiT with a Qwen2.5-VL-7B text encoder and its own video-style VAE)."""

from .components import denoiser, vae
from .spec import ComponentSpec, ModelSpec, PipelineCall

MODELS = (
    ModelSpec(
        name="qwen-image", family="qwen-image", title="Qwen-Image",
        components=(
            denoiser("transformer", "QwenImageTransformer2DModel", "qwen-image-transformer", "Qwen-Image MMDiT"),
            ComponentSpec("text_encoder", "text_encoder", "transformers", "Qwen2_5_VLForConditionalGeneration",
                          "qwen2.5-vl-7b", "qwen2", 256, title="Qwen2.5-VL 7B"),
            vae("qwen-image-vae", "Qwen-Image VAE", cls="AutoencoderKLQwenImage"),
        ),
        width=1328, height=1328, steps=50, guidance=4.0, uses_cfg=True, latent_factor=16,
        scheduler="FlowMatchEulerDiscreteScheduler", pipeline="QwenImagePipeline",
        hf_repo="Qwen/Qwen-Image",
        signature="'transformer_blocks.*' x60 with 'img_mod' / 'txt_mod' and 'txt_norm'",
        # "true" CFG: the guidance value is true_cfg_scale, and the second pass runs only with a negative prompt
        call=PipelineCall(guidance_args=("guidance_scale", "true_cfg_scale"), negative_default=" "),
    ),
)
