"""A cheap preview of a denoising step: the latents projected linearly to RGB, no VAE.

Decoding latents with the VAE costs as much as a step on small cards; a 4x3 (or 16x3) matrix per latent
space gives a recognisable thumbnail for free, which is what ComfyUI's and A1111's "approx NN/cheap"
previews show. The factors below are the ones published in ComfyUI's `comfy/latent_formats.py`
(`latent_rgb_factors` and `latent_rgb_factors_bias` of SD15, SDXL, SD3 and Flux), fitted on each
latent space as the sampler sees it (scaled, and for SD3/Flux shifted) — which is also how diffusers
hands the latents to a step callback. The result is mapped from [-1, 1] to [0, 1] as ComfyUI does.
"""

from __future__ import annotations

# (latent_rgb_factors, latent_rgb_factors_bias) per latent space; rows are latent channels, columns R, G, B.
_SD15 = ((
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
), (0.0, 0.0, 0.0))
_SDXL = ((
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
), (0.1084, -0.0175, -0.0011))
_SD3 = ((
    (-0.0922, -0.0175, 0.0749), (0.0311, 0.0633, 0.0954), (0.1994, 0.0927, 0.0458), (0.0856, 0.0339, 0.0902),
    (0.0587, 0.0272, -0.0496), (-0.0006, 0.1104, 0.0309), (0.0978, 0.0306, 0.0427), (-0.0042, 0.1038, 0.1358),
    (-0.0194, 0.0020, 0.0669), (-0.0488, 0.0130, -0.0268), (0.0922, 0.0988, 0.0951), (-0.0278, 0.0524, -0.0542),
    (0.0332, 0.0456, 0.0895), (-0.0069, -0.0030, -0.0810), (-0.0596, -0.0465, -0.0293), (-0.1448, -0.1463, -0.1189),
), (0.2394, 0.2135, 0.1925))
_FLUX = ((
    (-0.0346, 0.0244, 0.0681), (0.0034, 0.0210, 0.0687), (0.0275, -0.0668, -0.0433), (-0.0174, 0.0160, 0.0617),
    (0.0859, 0.0721, 0.0329), (0.0004, 0.0383, 0.0115), (0.0405, 0.0861, 0.0915), (-0.0236, -0.0185, -0.0259),
    (-0.0245, 0.0250, 0.1180), (0.1008, 0.0755, -0.0421), (-0.0515, 0.0201, 0.0011), (0.0428, -0.0012, -0.0036),
    (0.0817, 0.0765, 0.0749), (-0.1264, -0.0522, -0.1103), (-0.0280, -0.0881, -0.0499), (-0.1262, -0.0982, -0.0778),
), (-0.0329, -0.0718, -0.0851))

# Catalogue family -> latent space. SD2 and PixArt use SD1.5's VAE; Chroma, HiDream use Flux's;
# families not listed (DeepFloyd IF works in pixels, Qwen-Image has its own video VAE) get no preview.
FACTORS = {"sd1": _SD15, "sd2": _SD15, "pixart": _SD15, "sdxl": _SDXL, "sd3": _SD3, "flux": _FLUX, "chroma": _FLUX,
           "hidream": _FLUX}
# Families whose pipelines hand the callback packed latents: (batch, (h/2)*(w/2), channels*4), 2x2 patches.
PACKED = ("flux", "chroma")
VAE_FACTOR = 8  # pixels per latent cell of every VAE above


def latent_preview(latents, family: str, width: int, height: int):
    """The first image of a batch of latents as a uint8 RGB array (h/8 x w/8), or None when the family has
    no published projection or the latents are not in the shape it expects."""
    import numpy as np
    import torch

    if family not in FACTORS or latents is None:
        return None
    factors, bias = FACTORS[family]
    x = latents[:1].detach().to("cpu", torch.float32)
    if family in PACKED and x.dim() == 3:
        h, w = height // VAE_FACTOR // 2, width // VAE_FACTOR // 2
        b, seq, c4 = x.shape
        if seq != h * w or c4 % 4:
            return None
        # diffusers' FluxPipeline._unpack_latents: (b, h*w, c*2*2) -> (b, c, 2h, 2w)
        x = x.view(b, h, w, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c4 // 4, h * 2, w * 2)
    if x.dim() != 4 or x.shape[1] != len(factors):
        return None
    rgb = torch.einsum("bchw,cr->bhwr", x, torch.tensor(factors)) + torch.tensor(bias)
    return (((rgb[0] + 1.0) / 2.0).clamp(0, 1) * 255).round().to(torch.uint8).numpy().astype(np.uint8)
