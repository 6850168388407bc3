"""The GPU selection guide: the best plan's class and seconds per step for each card (or VRAM tier) and
model at its default size. `lowvram gpus` prints it; `python -m lowvram.docs gpu-guide` writes it into
README.md, so the README's table is the command's output, not a copy that drifts."""

from __future__ import annotations

GUIDE_RAM_BYTES = 32 * 2**30  # the README's guide assumes a 32 GB desktop (`gpus --ram 32GB`, the default)


def tier_rows(ram_bytes: int) -> list:
    """(label, Machine) per VRAM tier (`gpus --tiers`)."""
    from .plan.machine import tier_machines

    return [(m.name, m) for m in tier_machines(ram_bytes)]


def card_rows(ram_bytes: int) -> list:
    """(label, Machine) per card in the table."""
    from .machines.cards import CARDS
    from .plan.machine import machine_from_card

    return [(c.name, machine_from_card(c, ram_bytes)) for c in CARDS]


def plan_class(p) -> str:
    """One cell: how the denoiser runs (resident / streamed / its 8-bit precision) and s/step."""
    if not p.fits:
        return "does not fit"
    from .plan.dtypes import FLOAT_DTYPES

    den = [c for c in p.components if c.role == "denoiser"]
    lossy = sorted({c.precision for c in den} - set(FLOAT_DTYPES))  # fp32 on a card without bf16 is exact too
    cls = lossy[0] if lossy else "streamed" if any(c.placement == "streamed" for c in den) else "resident"
    return f"{cls} {p.seconds_per_step:.2f}"


def guide_grid(rows, names, quality: str) -> list:
    """[(label, [cell per model])] for machines `rows` and catalogue model `names` under `quality`."""
    from .catalogue import MODELS
    from .plan import Policy, Workload, make_plan

    table = []
    for label, machine in rows:
        cells = []
        for n in names:
            spec = MODELS[n]
            p = make_plan(spec, Workload(spec.width, spec.height, 1, spec.steps), machine, Policy(quality), find_smallest=False)
            cells.append(plan_class(p))
        table.append((label, cells))
    return table


def markdown_table(header, table) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([label] + cells) + " |" for label, cells in table]
    return "\n".join(lines) + "\n"


def readme_guide() -> str:
    """The README's table: `lowvram gpus --tiers --ram 32GB --markdown`."""
    from .catalogue import MODELS

    names = list(MODELS)
    return markdown_table(["GPU"] + names, guide_grid(tier_rows(GUIDE_RAM_BYTES), names, "balanced"))
