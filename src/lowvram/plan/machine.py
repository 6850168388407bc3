"""Build the Machine the planner plans for: a card from the table, this machine's probe, or overrides."""

from __future__ import annotations

from dataclasses import replace

from ..errors import UserError
from ..machines.cards import Card, find_card, pcie_bandwidth_bytes_per_s
from ..units import parse_size
from .types import Machine

DEFAULT_RAM = 16 * 2**30  # what to assume for a named card when --ram is not given: a common desktop


def machine_from_card(card: Card, ram_bytes: int = DEFAULT_RAM) -> Machine:
    return Machine(name=card.name, vram_bytes=card.vram_bytes, ram_bytes=ram_bytes,
                   link_bytes_per_s=pcie_bandwidth_bytes_per_s(card), tflops=card.fp16_tflops,
                   bf16=card.bf16, fp8=card.fp8, arch=card.arch)


def resolve_machine(gpu: str | None = None, vram: str | None = None, ram: str | None = None,
                    link_gbps: float | None = None, tflops: float | None = None, cpu_fallback: bool = False) -> Machine:
    """--gpu names a table card; otherwise the local GPU is probed; --vram/--ram/--link-gbps/--tflops override.
    `cpu_fallback` (generate): with no GPU and no --vram, plan as for a card with half this machine's
    available RAM, and run on the CPU."""
    ram_bytes = parse_size(ram, "RAM size") if ram else None
    if gpu:
        card = find_card(gpu)
        if card is None:
            raise UserError(f"Unknown GPU {gpu!r}: use a name from `lowvram gpus` (e.g. \"RTX 4060\"), or give --vram and --tflops.")
        m = machine_from_card(card, ram_bytes or DEFAULT_RAM)
    else:
        from ..machines.probe import probe

        p = probe()
        card = find_card(p.gpu_name) if p.gpu_name else None
        if card is not None:
            m = replace(machine_from_card(card, ram_bytes or p.ram_total), vram_bytes=p.vram_total or card.vram_bytes)
        elif p.gpu_name:
            m = Machine(p.gpu_name, p.vram_total, ram_bytes or p.ram_total, 25e9, 50.0)
        elif vram:
            m = Machine("custom", 0, ram_bytes or p.ram_total, 25e9, 50.0)
        elif cpu_fallback:
            m = Machine("custom", max(1, p.ram_available // 2**30 // 2) * 2**30, ram_bytes or p.ram_total, 25e9, 50.0)
        else:
            raise UserError("No CUDA GPU found on this machine: name the card to plan for with --gpu \"RTX 4060\" or give --vram 8GB.")
    if vram:
        m = replace(m, vram_bytes=parse_size(vram, "VRAM size"), name=m.name if gpu else "custom")
    if ram_bytes:
        m = replace(m, ram_bytes=ram_bytes)
    if link_gbps is not None:
        if not 0 < link_gbps < 10_000:
            raise UserError(f"--link-gbps {link_gbps} is out of range: give the host-to-GPU bandwidth in GB/s, e.g. 25.")
        m = replace(m, link_bytes_per_s=link_gbps * 1e9)
    if tflops is not None:
        if not 0 < tflops < 100_000:
            raise UserError(f"--tflops {tflops} is out of range: give the card's dense fp16 TFLOP/s, e.g. 165.")
        m = replace(m, tflops=tflops)
    return m


TIER_CARD = "RTX 4060 Ti 16GB"  # the compute and link every VRAM tier of `gpus --tiers` shares
VRAM_TIERS_GB = (4, 6, 8, 12, 16, 24)


def tier_machines(ram_bytes: int) -> list[Machine]:
    """One machine per VRAM tier, alike but for VRAM (`lowvram gpus --tiers`, and what ships)."""
    base = machine_from_card(find_card(TIER_CARD), ram_bytes)
    return [replace(base, name=f"{v} GB", vram_bytes=v * 2**30) for v in VRAM_TIERS_GB]
