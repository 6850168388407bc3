"""The VAE tile size, set on a diffusers VAE the same way by the simulator and the runtime."""

from __future__ import annotations


def latent_scale(vae) -> int:
    """Pixels per latent along a side."""
    return 2 ** (len(vae.config.block_out_channels) - 1) if hasattr(vae.config, "block_out_channels") else 8


def set_tile(vae, tile: int) -> None:
    """Tiled decode/encode with `tile`-pixel tiles (0: whole image). The simulator sets the same."""
    if not tile:
        if hasattr(vae, "disable_tiling"):
            vae.disable_tiling()
        return
    if not hasattr(vae, "enable_tiling"):
        return
    vae.enable_tiling()
    f = latent_scale(vae)
    vae.tile_sample_min_size = tile
    vae.tile_latent_min_size = tile // f
    if hasattr(vae, "tile_sample_min_height"):  # newer VAEs keep the two sides apart
        vae.tile_sample_min_height = vae.tile_sample_min_width = tile
        vae.tile_latent_min_height = vae.tile_latent_min_width = tile // f
