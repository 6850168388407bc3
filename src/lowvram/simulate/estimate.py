"""Estimate a simulation at an image size never simulated, from the exact answers known at other sizes.

Why: a size the page has not planned before costs one fake-tensor run per component (12-35 s on a 2-core
machine, bench/estimate_error.py), while the page must answer within a second. For a fixed component,
operation, batch, dtype, attention kernel and VAE tile, the activation peak, the output/input bytes and the
FLOPs are close to polynomials in the image's pixel count: linear terms from convolutions and MLPs,
quadratic ones from attention where the kernel materialises the scores (FLOPs of attention are quadratic
whatever the kernel). So each quantity is fitted as a quadratic in the pixel count through the known sizes
nearest the asked one (numpy.polyfit), with at least MIN_POINTS distinct pixel counts.

Only the page's readout uses these (plan/estimated.py), marked as estimates; `generate` and the Session
plan from exact simulations only. No torch: answers are looked up, never simulated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ..catalogue import ComponentSpec, ModelSpec
from .api import SimRequest, SimResult, known_result, normalised, simulated_sizes

# Square sizes whose answers ship for the models the page plans most (lowvram/ship.py `--anchors`): with
# the model's default size they give every series MIN_POINTS known sizes from 512² to 2048².
ANCHOR_SIDES = (512, 768, 1024, 1536, 2048)
# Whole VAE decodes also ship at tile sizes and below: a tiled decode is estimated as the exact simulation
# composes it (simulate/tiled.py), from its tiles; edge tiles are as small as the latent's 8-pixel grid.
VAE_TILE_ANCHOR_SIDES = (64, 128, 256, 384)
MIN_POINTS = 3  # a quadratic needs three distinct pixel counts
FIT_DEGREE = 2  # linear (convs, MLPs) + quadratic (attention scores) terms in the pixel count
# An estimate whose pixel count lies beyond the known ones by more than this factor says it extrapolates.
EXTRAPOLATION_LIMIT = 1.25
FITTED = ("activation_peak_bytes", "output_bytes", "input_bytes", "flops")


@dataclass(frozen=True)
class Estimate:
    result: SimResult
    sizes: tuple[tuple[int, int], ...]  # the known sizes it was fitted to (none: composed from known tiles only)
    extrapolated: bool  # the asked pixel count lies beyond them by more than EXTRAPOLATION_LIMIT
    batches: tuple[int, ...] = ()  # the batches it was scaled from, when its own batch was never simulated

    @property
    def exact(self) -> bool:
        """A tiled decode whose every tile was known: the exact simulation's own composition."""
        return not self.sizes and not self.batches


def anchor_sides(comp: ComponentSpec, req: SimRequest) -> tuple[int, ...]:
    """The square sizes whose answers ship for this question (lowvram/ship.py anchor_requests)."""
    small = VAE_TILE_ANCHOR_SIDES if comp.role == "vae" and req.op == "decode" and not req.vae_tile else ()
    return small + ANCHOR_SIDES


def _tiled(comp: ComponentSpec, req: SimRequest) -> bool:
    """diffusers' AutoencoderKL tiled decode: composed from its tiles (simulate/tiled.py)."""
    return comp.class_name == "AutoencoderKL" and req.op == "decode" and bool(req.vae_tile)


class _TooFew(Exception):
    pass


def known_points(model: ModelSpec, comp: ComponentSpec, req: SimRequest,
                 config_overrides: dict | None = None) -> list[tuple[tuple[int, int], SimResult]]:
    """Exact answers for the same question at other sizes: the anchors, the model's default size and
    whatever this user's cache simulated."""
    req = normalised(comp, req)
    sizes = {(s, s) for s in anchor_sides(comp, req)} | {(model.width, model.height)}
    sizes |= set(simulated_sizes(model, comp, req, config_overrides))
    sizes.discard((req.width, req.height))
    out = []
    for w, h in sorted(sizes):
        found = known_result(model, comp, replace(req, width=w, height=h), config_overrides)
        if found is not None:
            out.append(((w, h), found))
    return out


def estimate_result(model: ModelSpec, comp: ComponentSpec, req: SimRequest,
                    config_overrides: dict | None = None) -> Estimate | None:
    """The quadratic through the MIN_POINTS known sizes nearest `req`'s (in log pixel count) — for a tiled
    decode, composed from its tiles' known or fitted answers — or None when fewer than MIN_POINTS distinct
    pixel counts are known."""
    if not _tiled(comp, req):
        return _fit_or_scale(model, comp, req, config_overrides)
    from .tiled import compose_tiled_decode

    fitted: list[Estimate] = []

    def tile(model: ModelSpec, comp: ComponentSpec, treq: SimRequest, config_overrides: dict | None = None) -> SimResult:
        found = known_result(model, comp, treq, config_overrides)
        if found is not None:
            return found
        est = _fit_or_scale(model, comp, treq, config_overrides)
        if est is None:
            raise _TooFew
        fitted.append(est)
        return est.result

    try:
        result = compose_tiled_decode(model, comp, normalised(comp, req), config_overrides, tile)
    except _TooFew:
        return None
    return Estimate(result, tuple(dict.fromkeys(s for e in fitted for s in e.sizes)), any(e.extrapolated for e in fitted),
                    tuple(dict.fromkeys(b for e in fitted for b in e.batches)))


def _fit_or_scale(model: ModelSpec, comp: ComponentSpec, req: SimRequest,
                  config_overrides: dict | None) -> Estimate | None:
    """Fitted over sizes at req's batch; else, for a batch never simulated, scaled from batches 1 and 2
    (each known or fitted): every activation of these models is per image, so each quantity is affine in
    the batch — through batch 1 and 2 where both are known, else proportional to batch 1's."""
    est = _fit(model, comp, req, config_overrides)
    if est is not None or req.batch == 1:
        return est
    one = _known_or_fit(model, comp, replace(req, batch=1), config_overrides)
    if one is None:
        return None
    two = _known_or_fit(model, comp, replace(req, batch=2), config_overrides) if req.batch != 2 else None
    b = req.batch
    values = {}
    for field in FITTED:
        v1 = getattr(one.result, field)
        values[field] = v1 + (b - 1) * (getattr(two.result, field) - v1) if two is not None else b * v1
    result = replace(one.result, **values)
    parts = [one] + ([two] if two is not None else [])
    return Estimate(result, tuple(dict.fromkeys(s for e in parts for s in e.sizes)), any(e.extrapolated for e in parts),
                    (1, 2) if two is not None else (1,))


def _known_or_fit(model: ModelSpec, comp: ComponentSpec, req: SimRequest, config_overrides: dict | None) -> Estimate | None:
    found = known_result(model, comp, req, config_overrides)
    if found is not None:
        return Estimate(found, (), False)
    return _fit(model, comp, req, config_overrides)


def _fit(model: ModelSpec, comp: ComponentSpec, req: SimRequest, config_overrides: dict | None) -> Estimate | None:
    import numpy as np

    points = known_points(model, comp, req, config_overrides)
    target = req.width * req.height
    nearest: dict[int, tuple[tuple[int, int], SimResult]] = {}
    # one point per pixel count (the squarest: most anchors are square), nearest first
    for size, res in sorted(points, key=lambda p: (abs(math.log(p[0][0] * p[0][1] / target)), abs(p[0][0] - p[0][1]))):
        nearest.setdefault(size[0] * size[1], (size, res))
    if len(nearest) < MIN_POINTS:
        return None
    chosen = sorted(nearest.values(), key=lambda p: abs(math.log(p[0][0] * p[0][1] / target)))[:MIN_POINTS]
    x = np.array([w * h for (w, h), _ in chosen], dtype=float) / target  # scaled: a well-conditioned fit at 1.0
    values = {}
    for field in FITTED:
        y = np.array([getattr(r, field) for _, r in chosen], dtype=float)
        coeffs = np.polyfit(x, y, FIT_DEGREE)
        values[field] = max(0, int(round(float(np.polyval(coeffs, 1.0)))))
    values["activation_peak_bytes"] = max(values["activation_peak_bytes"], values["input_bytes"], values["output_bytes"])
    base = chosen[0][1]
    result = SimResult(weights_bytes=base.weights_bytes, params=base.params, seconds=0.0, **values)
    counts = [w * h for (w, h), _ in points]
    extrapolated = target > max(counts) * EXTRAPOLATION_LIMIT or target < min(counts) / EXTRAPOLATION_LIMIT
    return Estimate(result, tuple(size for size, _ in chosen), extrapolated)
