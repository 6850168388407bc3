"""VAE decode under the plan: full or tiled, and never losing the latents to an out-of-memory error.

Tiling is diffusers' own (`enable_tiling`: overlapping tiles, blended linearly across the overlap, so no
seams); we only set the tile size the plan chose. If a decode still runs out of memory (another program
took VRAM), it is retried tiled with tiles half the size, down to a floor — the latents stay untouched.
"""

from __future__ import annotations

import functools

import torch

from ..kernels.vae_tiling import latent_scale, set_tile

MIN_TILE = 128  # pixels: below this the overlap dominates and quality suffers


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def decode(vae, latents: torch.Tensor, tile: int = 0, on_retry=None, min_tile: int = MIN_TILE) -> torch.Tensor:
    """`vae.decode(latents)` at the planned tile size; on OOM, smaller tiles until MIN_TILE."""
    return _retrying(lambda: vae.decode(latents, return_dict=False)[0], vae, latents, tile, on_retry, min_tile)


def _in_vae_dtype(vae, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Latents in the VAE's own dtype: a VAE planned in fp32 (it overflows in fp16) beside an fp16 denoiser
    gets fp16 latents from pipelines that only cast for their own upcast path."""
    dtype = next(vae.parameters()).dtype
    if args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point() and args[0].dtype != dtype:
        args = (args[0].to(dtype),) + tuple(args[1:])
    elif isinstance(kwargs.get("z"), torch.Tensor) and kwargs["z"].is_floating_point() and kwargs["z"].dtype != dtype:
        kwargs = dict(kwargs, z=kwargs["z"].to(dtype))
    return args, kwargs


def guard_decode(vae, tile: int, on_retry=None, min_tile: int = MIN_TILE) -> None:
    """Make every `vae.decode(...)` call (the pipeline's own) decode at the plan's tile size, retried
    with smaller tiles on OOM. Undo with `del vae.decode` (the wrapper is an instance attribute)."""
    original = vae.decode

    @functools.wraps(original)
    def decode_(*args, **kwargs):
        args, kwargs = _in_vae_dtype(vae, args, kwargs)
        latents = args[0] if args else kwargs["z"]
        return _retrying(lambda: original(*args, **kwargs), vae, latents, tile, on_retry, min_tile)

    set_tile(vae, tile)  # encode (img2img) tiles alike
    vae.decode = decode_


def _retrying(call, vae, latents: torch.Tensor, tile: int, on_retry, min_tile: int):
    current = tile
    while True:
        set_tile(vae, current)
        try:
            with torch.no_grad():
                return call()
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if not _is_oom(e):
                raise
            if vae.device.type == "cuda":
                torch.cuda.empty_cache()
            nxt = (current // 2) if current else 512
            h, w = latents.shape[-2:]
            nxt = min(nxt, max(h, w) * latent_scale(vae) // 2)
            if nxt < min_tile:
                raise
            if on_retry is not None:
                on_retry(current, nxt)
            current = nxt
