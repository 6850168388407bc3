"""How a plan explains itself: the line saying why each component was placed as it was, the reason each
rejected option lost, and the trade-offs that can make a plan look slower than a neighbour's.

A plan can be right and still look wrong beside another: a 4-step model planned into 8-bit weights while
the same transformer at 28 steps streams in bf16 (placing the weights costs more than 4 faster steps
save), or a bigger card planned slower (the balanced policy keeps lossless weights unless 8-bit ones are
1.3x faster). Each such case is named here, as a decision line and a `Plan.tradeoffs` key, so that the
output says why and a test can tell an explained difference from a wrong one.

This module only reads the options the search built (planner.Option); it decides nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..units import format_bytes

if TYPE_CHECKING:  # the search's option type; imported for annotations only (planner imports this module)
    from .planner import Option

# Two predicted times closer than this fraction are the same (float sums of the same terms in another order).
SAME_TIME = 1e-6
# A trade is named only when the slower side is at least this much slower: smaller differences are noise
# of the cost model, not a choice worth a line of output.
NAMED_DIFFERENCE = 0.01

# Plan.tradeoffs keys (contract.py)
PLACEMENT, RAM, POLICY = "placement", "ram", "policy"


def steady_seconds(o: Option) -> float:
    """The option's calls in one image, without placing it."""
    return o.seconds_per_image - o.place_s


def describe(o: Option) -> str:
    """An option in a few words: "streamed 40/138 fp8 from disk", "resident bf16, CFG as 2 batches"."""
    p = o.plan
    if p.placement == "cpu":
        what = f"on the CPU in {p.compute_dtype}"
    elif p.placement == "streamed":
        what = f"streamed {p.resident_units}/{p.total_units} {p.precision}"
    else:
        what = f"resident {p.precision}"
    if p.source == "disk":
        what += " from disk"
    if o.cfg_mode == "split":
        what += ", CFG as 2 batches"
    if o.vae_tile:
        what += f", {o.vae_tile}px tiles"
    return what


def _time(seconds: float) -> str:
    """Seconds to read: milliseconds below a tenth of a second (text encoders, VAEs), else 2 decimals."""
    return f"{seconds * 1000:.0f} ms" if abs(seconds) < 0.1 else f"{seconds:.2f} s"


def _slower(a: float, b: float) -> bool:
    """a is slower than b by more than rounding."""
    return a > b * (1 + SAME_TIME) + 1e-12


def ram_shortfall(o: Option, left: int, ram_budget: int) -> str:
    """Why an option's host copy cannot be had: more than the machine, or more than the others leave."""
    if o.ram_bytes > ram_budget:
        return (f"it keeps {format_bytes(o.ram_bytes)} of weights in RAM, more than the {format_bytes(max(ram_budget, 0))} "
                "this machine has beside the process")
    return (f"it keeps {format_bytes(o.ram_bytes)} of weights in RAM, and the other components' copies leave "
            f"{format_bytes(max(left, 0))}")


def loss_reason(o: Option, best: Option, left: int, ram_budget: int, images_per_load: int) -> str:
    """Why `o` lost to `best` for the same component, in one clause."""
    d = o.seconds_per_image - best.seconds_per_image
    if _slower(best.seconds_per_image, o.seconds_per_image):
        return f"{_time(-d)} per image faster, but {ram_shortfall(o, left, ram_budget)}"
    if not _slower(o.seconds_per_image, best.seconds_per_image):
        if o.vram_peak > best.vram_peak:
            return "as fast, with more VRAM"
        if o.plan.source == "disk" and best.plan.source != "disk":
            return "as fast; weights held in RAM win a tie"
        return "as fast; of equal options the first listed (higher precision, batched CFG) was kept"
    steps_d = steady_seconds(o) - steady_seconds(best)
    place_d = o.place_s - best.place_s
    if steps_d < -NAMED_DIFFERENCE * steady_seconds(best):
        per_load = " (one image per load)" if images_per_load == 1 else f" (over {images_per_load} images per load)"
        return (f"{_time(d)} per image slower: its calls are {_time(-steps_d)} faster, but placing it costs "
                f"{_time(place_d)} more per image{per_load}")
    if o.plan.placement == "cpu":
        return f"{_time(d)} per image slower: the CPU computes it in {_time(steady_seconds(o))}"
    parts = [f"calls {_time(steps_d)} slower"] if steps_d > NAMED_DIFFERENCE * steady_seconds(best) else []
    if o.compute_s > best.compute_s * (1 + NAMED_DIFFERENCE) and o.plan.precision != best.plan.precision:
        # slower compute at another precision: its own dequantisation, or the chosen one's fp8 matmuls
        why = (f"{best.plan.precision} multiplies on fp8 tensor cores" if best.plan.matmul and not o.plan.matmul
               else f"{o.plan.precision} is dequantised per layer")
        parts[:0] = [why]
    elif o.streamed_bytes > best.streamed_bytes:
        parts[:0] = [f"streams {format_bytes(o.streamed_bytes - best.streamed_bytes)} more per call"]
    if place_d > 0:
        parts.append(f"placement {_time(place_d)} slower")
    return f"{_time(d)} per image slower" + (": " + ", ".join(parts) if parts else "")


def _companion(o: Option) -> str:
    """The ControlNet beside a denoiser option, as its row shows it ("streamed 4/12 fp8"), else ""."""
    c = o.companion
    return f"{c.placement} {c.resident_units}/{c.total_units} {c.precision}" if c else ""


def _printed_as(o: Option) -> tuple:
    """What a rejected row shows of an option: options alike in all of it are listed once."""
    p = o.plan
    return p.placement, p.resident_units, p.precision, p.source, o.cfg_mode, o.vae_tile, _companion(o)


def rejected_rows(best: Option, others: list[Option], reserve: int, steps: int, left: int, ram_budget: int,
                  images_per_load: int) -> list[dict]:
    """One row per distinct rejected option of a component, fastest first, each with its predicted time,
    peaks and the reason it lost. Options that would print the same (same placement, resident units,
    precision, source, CFG mode and tile) are listed once, at their best time."""
    rows, seen = [], {_printed_as(best)}  # the chosen option is not listed as its own rival
    for o in sorted(others, key=lambda o: (o.seconds_per_image, o.vram_peak)):
        p = o.plan
        key = _printed_as(o)
        if key in seen:
            continue
        seen.add(key)
        companion = _companion(o)
        row = {"component": p.name, "option": describe(o), "placement": p.placement, "resident_units": p.resident_units,
               "total_units": p.total_units, "precision": p.precision, "source": p.source, "cfg_mode": o.cfg_mode,
               "vae_tile": o.vae_tile, "seconds_per_image": round(o.seconds_per_image, 3),
               "vram_bytes": o.vram_peak + reserve, "ram_bytes": o.ram_bytes,
               "reason": loss_reason(o, best, left, ram_budget, images_per_load)}
        if p.role == "denoiser":
            row["seconds_per_step"] = round(steady_seconds(o) / steps, 3)
        if companion:
            row["controlnet"] = companion
        rows.append(row)
    return rows


def why_chosen(best: Option, others: list[Option], left: int, ram_budget: int) -> tuple[str, bool]:
    """The component's decision line, and whether a faster option lost on RAM alone."""
    p = best.plan
    if p.placement == "resident":
        what = f"resident in {p.precision}"
    elif p.placement == "streamed":
        what = (f"streamed in {p.precision}, first {p.resident_units}/{p.total_units} units resident, "
                f"{p.streamed_bytes / 2**30:.1f} GiB copied per call")
    else:
        what = "on the CPU"
    faster = [o for o in others if _slower(best.seconds_per_image, o.seconds_per_image)]
    if faster:
        # the least RAM any faster option needs says how far the machine is from it
        why = "a faster option needs more RAM: " + ram_shortfall(min(faster, key=lambda o: o.ram_bytes), left, ram_budget)
    elif p.placement == "cpu":
        why = "no GPU option fits" if not [o for o in others if o.plan.placement != "cpu"] else "faster than loading it"
    elif p.placement == "streamed" and best.unit_bytes and sum(best.unit_bytes) <= best.weight_budget:
        why = ("the whole component would fit, but streaming part of it from disk behind compute places it faster "
               "than reading it all before the first call")
    elif p.placement == "streamed":
        why = "the whole component does not fit next to its activations; the fastest resident prefix is kept"
    else:
        why = "fits with its activations"
    extra = ""
    if best.cfg_mode != "none":
        extra = f"; CFG as {'one batch of 2' if best.cfg_mode == 'batch' else 'two batches of 1'}"
    if p.notes:
        extra += f"; {p.notes}"
    c = best.companion
    if c is not None:
        extra += (f"; ControlNet beside it, {c.placement}" + (f" {c.resident_units}/{c.total_units} units" if c.placement ==
                  "streamed" else "") + f" in {c.precision} ({format_bytes(c.vram_bytes)} weights, its call "
                  f"{format_bytes(c.activation_bytes)} activations)")
    return f"{p.name}: {what} ({why}){extra}", bool(faster)


def placement_trade(best: Option, options: list[Option], steps: int, images_per_load: int) -> str:
    """A decision line when the chosen option's calls are slower than another option's that lost only on
    placement (pinning or reading the weights for this image), else "". Named for denoisers, whose calls
    are the `s/step` a plan reports."""
    rivals = [o for o in options if o is not best and not _slower(best.seconds_per_image, o.seconds_per_image)
              and steady_seconds(o) < steady_seconds(best) * (1 - NAMED_DIFFERENCE)]
    if not rivals:
        return ""
    r = min(rivals, key=steady_seconds)
    load = ("placement is charged to this one image (images_per_load=1; a Session that keeps the weights "
            "loaded for many images shares it)" if images_per_load == 1 else
            f"placement is shared by {images_per_load} images per load")
    return (f"placement: {best.plan.name} {describe(best)} rather than {describe(r)}, whose steps are faster "
            f"({steady_seconds(r) / steps:.2f} vs {steady_seconds(best) / steps:.2f} s/step) but whose placement costs "
            f"{r.place_s:.1f} s per image against {best.place_s:.1f} s: over {steps} steps it makes the slower image; "
            f"{load}")


def load_assumption(images_per_load: int, host: bool = False) -> str:
    """The decision line saying how placement was charged. host: a CPU machine (Machine.device "cpu"),
    where weights held in RAM compute where they are: nothing is copied or page-locked."""
    if host:
        return ("load: on the CPU the weights held in RAM are used where they are: nothing is placed or "
                "page-locked (weights mapped from disk are still read for every image)")
    if images_per_load == 1:
        return ("load: placing the weights (copies, page-locking) is charged to every image — one image per load, "
                "as a one-shot generate runs")
    return (f"load: page-locking the streamed weights is shared by {images_per_load} images per load (the weights "
            "stay loaded between images); copies to the GPU are charged to every image")
