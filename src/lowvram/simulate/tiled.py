"""diffusers' tiled VAE decode (AutoencoderKL.tiled_decode), composed from one answer per distinct tile
shape — torch-free, so the exact simulation (simulate/run.py) and the readout's estimates
(plan/estimated.py) compose a tiled decode the same way, each from its own tile answers.

Running the whole tiled decode on fake tensors costs one decoder pass per tile (30 s for 2048² in 256-px
tiles); the memory it needs follows from the tiles: while tile k decodes, the latents, every decoded tile
so far and tile k's own decode are alive; at the end the blended rows and the concatenated image join all
decoded tiles (AutoencoderKL.tiled_decode keeps them until it returns).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from ..catalogue import ComponentSpec, ModelSpec, load_config
from .api import CUDA_BLOCK_BYTES, SimRequest, SimResult

TILE_OVERLAP = 0.25  # diffusers' AutoencoderKL.tile_overlap_factor
ELEMENT_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}  # bytes per element of each compute dtype


def tile_shapes(model: ModelSpec, comp: ComponentSpec, req: SimRequest, overrides: dict | None = None):
    """(latent factor, latent channels, row heights, column widths) of req's tiles, in latent pixels;
    None when the image fits one tile (diffusers then decodes it whole)."""
    cfg = load_config(comp.config)
    if overrides:
        cfg = {**cfg, **overrides}
    f = 2 ** (len(cfg["block_out_channels"]) - 1)
    hl, wl = req.height // f, req.width // f
    lat_tile = req.vae_tile // f
    if hl <= lat_tile and wl <= lat_tile:
        return None
    stride = int(lat_tile * (1 - TILE_OVERLAP))
    hs = [min(lat_tile, hl - i) for i in range(0, hl, stride)]
    ws = [min(lat_tile, wl - j) for j in range(0, wl, stride)]
    return f, cfg.get("latent_channels", 4), hs, ws


def compose_tiled_decode(model: ModelSpec, comp: ComponentSpec, req: SimRequest, overrides: dict | None,
                         simulate: Callable[..., SimResult]) -> SimResult:
    """The tiled decode of `req` from `simulate`'s answers for its distinct tile shapes (whole decodes)."""
    shapes = tile_shapes(model, comp, req, overrides)
    if shapes is None:  # diffusers decodes it whole
        return simulate(model, comp, replace(req, vae_tile=0), config_overrides=overrides)
    f, lat_channels, hs, ws = shapes
    blend = int(req.vae_tile * TILE_OVERLAP)
    row_limit = req.vae_tile - blend
    elem = ELEMENT_BYTES[req.dtype]
    r = CUDA_BLOCK_BYTES if req.target == "cuda" else 1

    def nbytes(*shape) -> int:
        n = elem
        for d in shape:
            n *= d
        return -(-n // r) * r

    tiles = {}
    for h in set(hs):
        for w in set(ws):
            tiles[(h, w)] = simulate(model, comp, replace(req, width=w * f, height=h * f, vae_tile=0),
                                     config_overrides=overrides)
    b = req.batch
    z = nbytes(b, lat_channels, req.height // f, req.width // f)
    done, peak, flops = 0, z, 0
    for h in hs:
        for w in ws:
            t = tiles[(h, w)]
            peak = max(peak, z + done + t.activation_peak_bytes - t.input_bytes)
            done += t.output_bytes
            flops += t.flops
    rows = sum(nbytes(b, 3, min(row_limit, h * f), sum(min(row_limit, w * f) for w in ws)) for h in hs)
    image = nbytes(b, 3, req.height, req.width)
    peak = max(peak, z + done + rows + image)
    any_tile = next(iter(tiles.values()))
    return SimResult(weights_bytes=any_tile.weights_bytes, activation_peak_bytes=peak, output_bytes=image, input_bytes=z,
                     flops=flops, params=any_tile.params, seconds=0.0)
