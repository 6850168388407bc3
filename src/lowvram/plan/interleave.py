"""Which units stay resident: spread among the streamed ones, so the link copies while anything computes.

The runtime streams through device buffers, two by default: a unit's copy starts when the copy before it is
done and the unit that last used its buffer (two streamed units back) has finished computing. With the first K
units resident (the prefix the planner sizes), every streamed unit comes after them: while the prefix
computes, the link has at most two units to copy and then idles, and the streamed units' copies pile up
behind their own short compute. On the unit-by-unit timeline below, for the real-size models at the
budgets issue #13 measures (the H100's measured call times, 54.9 GB/s pinned), the prefix costs SDXL at 4 GiB
1.14x its physical limit, Flux-dev at 8 / 12 GiB 1.09x / 1.20x, SD3.5-Large at 8 / 12 GiB 1.41x / 1.40x;
resident units spread so that the streamed bytes follow the compute, within the same VRAM: 1.04x,
1.01x / 1.01x, 1.17x / 1.02x (`PYTHONPATH=src python bench/interleave.py --measured`).

A third buffer lets a copy start when the unit three streamed units back has finished: the link can run
two units ahead where big streamed units sit beside short compute (SD3.5-Large's 8 GiB plan: 201 -> 177 ms
a call, 1.17x -> 1.01x its limit), at the price of one more largest unit of VRAM, which then holds fewer
resident units (Flux at 8 GiB: 321 -> 330 ms). So the depth is chosen per component, like the set: the
search runs at each depth in DEPTHS and keeps the fastest call within the budget.

Hand-written because it is the runtime's own schedule: no library models it. The timeline is the
steady state of the runtime (runtime/streaming.py): the copy stream waits only for buffer reuse, compute
waits only for its unit's copy, the next call's first copy overlaps this call's last unit (wrap-around),
the host issues ahead of the device. Per-unit compute is the call's compute time split by each unit's
share of the FLOPs (simulate/unit_compute.py, one call at the model's default size).
"""

from __future__ import annotations

from dataclasses import dataclass

PASSES = 3  # steady state: the second pass starts where the first left the link; the third is measured
MIN_GAIN = 0.01  # the prefix stays unless spreading makes a call at least this much faster (model noise)
CAPS = 6  # largest unit sizes tried as the biggest streamed unit (its buffers shrink the budget)
DEPTHS = (2, 3)  # device buffers tried; a fourth gained nothing on the catalogue's denoisers (<= 1 %)


def call_seconds(order: list[int], compute_s: list[float], copy_s: list[float], resident: set[int],
                 depth: int = 2) -> float:
    """Steady-state seconds of one call: `order` the units as they run (indices), `compute_s[i]` the
    compute of the i-th run, `copy_s[u]` unit u's copy; units in `resident` are not copied; the others
    stream through `depth` device buffers."""
    t = copy_end = 0.0
    done: list[float] = []  # compute end of each streamed run, in sequence (its buffer frees then)
    ends = []
    for _ in range(PASSES):
        for u, c in zip(order, compute_s):
            start = t
            if u not in resident:
                free = done[-depth] if len(done) >= depth else 0.0  # the buffer's last user: `depth` streamed runs back
                copy_end = max(copy_end, free) + copy_s[u]
                start = max(t, copy_end)
            t = start + c
            if u not in resident:
                done.append(t)
        ends.append(t)
    return ends[-1] - ends[-2]


def vram_bytes(unit_bytes: list[int], resident: set[int], depth: int = 2) -> int:
    """Resident units plus `depth` buffers sized for the largest streamed unit (runtime/buffers.py)."""
    streamed = [b for i, b in enumerate(unit_bytes) if i not in resident]
    return sum(b for i, b in enumerate(unit_bytes) if i in resident) + (depth * max(streamed) if streamed else 0)


def _spread(order: list[int], compute_s: list[float], unit_bytes: list[int], budget: int, forced: set[int],
            cap: int, lead: float, half: bool, per_unit: dict[int, float], depth: int) -> set[int] | None:
    """Walk the call: stream a unit while the bytes streamed so far stay under the share of the bytes that
    must stream proportional to the compute done so far (`lead` ahead of it); keep the others resident.
    per_unit: each unit's compute over the call (all its runs)."""
    ran = per_unit.keys()
    forced = forced | {u for u in range(len(unit_bytes)) if unit_bytes[u] > cap}  # no streamed unit is larger
    resident = set(forced)
    never_run = [i for i in range(len(unit_bytes)) if i not in ran and i not in forced]
    bufs = depth * max([unit_bytes[u] for u in ran | set(never_run) if u not in forced] or [0])
    room = budget - bufs - sum(unit_bytes[u] for u in forced)
    if room < 0:
        return None
    free = [u for u in dict.fromkeys(order) if u not in forced]
    must_stream = max(0, sum(unit_bytes[u] for u in free) + sum(unit_bytes[u] for u in never_run) - room)
    total = sum(compute_s) or 1.0
    done = streamed = 0.0
    decided: set[int] = set(forced)  # a unit run twice is decided at its first run
    for u, c in zip(order, compute_s):
        done += c
        if u in decided:
            continue
        decided.add(u)
        target = must_stream * min(1.0, done / total + lead)
        if streamed + unit_bytes[u] * (0.5 if half else 0.0) <= target:
            streamed += unit_bytes[u]
        else:
            resident.add(u)
    # over the budget: stream again the resident units that cost the least compute per byte
    while vram_bytes(unit_bytes, resident, depth) > budget:
        movable = [u for u in resident if u not in forced]
        if not movable:
            return None
        resident.discard(max(movable, key=lambda u: unit_bytes[u] / (1e-12 + per_unit.get(u, 0.0))))
    return resident


@dataclass(frozen=True)
class Interleaving:
    resident: tuple[int, ...]  # unit indices kept on the device
    buffers: int  # device buffers the others stream through
    vram: int
    streamed: int  # bytes copied per call
    seconds: float  # one call on the timeline
    prefix_seconds: float  # one call with the first k units resident, on the same timeline


def interleave(unit_bytes: list[int], order: list[int], flops: list[int], compute_s: float, link_bytes_per_s: float,
               budget: int, k: int, forced: set[int], max_streamed_unit: int | None = None) -> Interleaving | None:
    """A resident set and a buffer count within `budget` bytes that the timeline finds at least MIN_GAIN
    faster per call than the first `k` units through two buffers (+ `forced`: units the runtime keeps
    resident anyway); None when there is none. `max_streamed_unit`: no unit larger is streamed (a plan
    whose host-side buffers were sized for the prefix's largest streamed unit)."""
    total = sum(flops) or 1
    run_s = [compute_s * f / total for f in flops]
    copy_s = [b / link_bytes_per_s for b in unit_bytes]
    prefix = set(range(k)) | forced
    base = call_seconds(order, run_s, copy_s, prefix)
    # no set within the budget beats the compute, nor streams less than what the budget leaves out: when the
    # prefix is already that close, there is nothing to gain (most plans on a big enough card)
    floor = max(compute_s, (sum(unit_bytes) - budget) / link_bytes_per_s)
    if base * (1 - MIN_GAIN) < floor:
        return None
    per_unit: dict[int, float] = {}
    for u, c in zip(order, run_s):
        per_unit[u] = per_unit.get(u, 0.0) + c
    best = None
    caps = sorted({unit_bytes[u] for u in set(order) if u not in forced
                   and (max_streamed_unit is None or unit_bytes[u] <= max_streamed_unit)}, reverse=True)[:CAPS]
    for depth in DEPTHS:
        if best is not None and best[0] * (1 - MIN_GAIN) < floor:
            break  # within MIN_GAIN of what no set beats: a deeper search could not win by MIN_GAIN
        for cap in caps:
            for lead in (0.0, 0.1):
                for half in (False, True):
                    resident = _spread(order, run_s, unit_bytes, budget, forced, cap, lead, half, per_unit, depth)
                    if resident is None:
                        continue
                    secs = call_seconds(order, run_s, copy_s, resident, depth)
                    # a deeper set must beat the shallower best by MIN_GAIN too: a buffer is VRAM held for nothing else
                    if best is None or secs < best[0] * (1 - MIN_GAIN if depth > best[2] else 1):
                        best = (secs, resident, depth)
    if best is None or best[0] > base * (1 - MIN_GAIN):
        return None
    secs, resident, depth = best
    return Interleaving(tuple(sorted(resident)), depth, vram_bytes(unit_bytes, resident, depth),
                        sum(b for i, b in enumerate(unit_bytes) if i not in resident), secs, base)
