"""Build the Machine the planner plans for: a card from the table, this machine's probe, or overrides."""

from __future__ import annotations

from dataclasses import replace

from ..errors import UserError
from ..machines.cards import Card, find_card, pcie_bandwidth_bytes_per_s, unknown_card_message
from ..units import parse_size
from . import cost
from ..contract import Machine

DEFAULT_RAM = 16 * 2**30  # what to assume for a named card when --ram is not given: a common desktop


# macOS lets the GPU of an Apple M-series chip wire about this share of unified memory (Metal's
# recommendedMaxWorkingSetSize: ~2/3 on 8-16 GB Macs, ~3/4 above); the rest stays with the system and the host.
UNIFIED_GPU_SHARE = 2 / 3


def machine_from_card(card: Card, ram_bytes: int | None = DEFAULT_RAM) -> Machine:
    """A table card as the machine a plan is for. A unified-memory chip (Apple M-series) has one memory:
    its GPU share is the VRAM budget and only the rest is RAM, so nothing is counted twice (`ram_bytes`,
    when given, is the size of that one memory; default: the card's)."""
    vram, ram = card.vram_bytes, ram_bytes or DEFAULT_RAM
    if card.unified:
        total = card.vram_bytes if ram_bytes in (None, DEFAULT_RAM) else ram_bytes
        vram = int(total * UNIFIED_GPU_SHARE)
        ram = total - vram
    return Machine(name=card.name, vram_bytes=vram, ram_bytes=ram, link_bytes_per_s=pcie_bandwidth_bytes_per_s(card),
                   tflops=card.fp16_tflops, bf16=card.bf16, fp8=card.fp8, arch=card.arch)


def cpu_machine(ram_total: int, ram_bytes: int | None = None, vram: str | None = None) -> Machine:
    """This machine's CPU as the machine a plan is for: RAM is the budget. Weights and activations get
    the RAM the Python process leaves (cost.BASELINE_RAM_BYTES), or `--vram` when given (a weight budget
    the accountant then holds the CPU run to, streaming what does not fit)."""
    ram = ram_bytes or ram_total
    budget = parse_size(vram, "VRAM size") if vram else max(0, ram - cost.BASELINE_RAM_BYTES)
    return Machine("CPU", budget, ram, cost.CPU_COPY_BYTES_PER_S, cost.CPU_FP32_TFLOPS, bf16=False, fp8=False,
                   cpu_tflops=cost.CPU_FP32_TFLOPS, arch=cost.CPU_ARCH, device="cpu")


def resolve_machine(gpu: str | None = None, vram: str | None = None, ram: str | None = None,
                    link_gbps: float | None = None, tflops: float | None = None) -> Machine:
    """The machine a plan is for: --gpu names a table card; otherwise the local GPU is probed, and a
    machine without one is planned as its CPU (`cpu_machine`); --vram/--ram/--link-gbps/--tflops override."""
    return _resolve(gpu, vram, ram, link_gbps, tflops)


def _resolve(gpu: str | None, vram: str | None, ram: str | None, link_gbps: float | None, tflops: float | None,
             probed=None) -> Machine:
    """resolve_machine; `probed`: this machine's probe when the caller has taken it already (else it is
    taken here, and only when no --gpu names the card)."""
    ram_bytes = parse_size(ram, "RAM size") if ram else None
    if gpu:
        m = _card_machine(gpu, ram_bytes)
    else:
        p = probed or _probe()
        card = find_card(p.gpu_name) if p.gpu_name else None
        if card is not None:
            m = replace(machine_from_card(card, ram_bytes or p.ram_total), vram_bytes=p.vram_total or card.vram_bytes)
        elif p.gpu_name:
            m = Machine(p.gpu_name, p.vram_total, ram_bytes or p.ram_total, 25e9, 50.0)
        else:
            return _overrides(cpu_machine(p.ram_total, ram_bytes, vram), None, None, link_gbps, tflops)
    return _overrides(m, vram, gpu, link_gbps, tflops, ram_bytes)


def resolve_run_machine(gpu: str | None = None, vram: str | None = None, ram: str | None = None) -> tuple[Machine, str]:
    """The machine `generate` plans for — the one that will run — and a line saying what runs where.

    With a usable CUDA GPU: as `resolve_machine`. Without one, the run is on the CPU and so is its plan:
    a card named with --gpu is not what runs, so it only lends its VRAM as the CPU run's weight budget
    (like --vram), and the line says so; a prediction for that card would describe another machine."""
    import torch  # what runs is what torch can use: nvidia-smi may see a card a CPU-only torch cannot

    p = _probe()
    if p.gpu_name and torch.cuda.is_available():
        m = _resolve(gpu, vram, ram, None, None, probed=p)  # as resolve_machine, without probing again
        return m, f"running on {m.name} (CUDA) under its plan"
    ram_bytes = parse_size(ram, "RAM size") if ram else None
    if gpu and not vram:
        card = _card_machine(gpu, ram_bytes)
        m = replace(cpu_machine(p.ram_total, ram_bytes), vram_bytes=card.vram_bytes)
        return m, (f"no CUDA GPU here: running on the CPU under a CPU plan ({cost.CPU_COMPUTE_DTYPE}), "
                   f"weights held to {card.name}'s {card.vram_bytes / 2**30:.0f} GiB")
    m = cpu_machine(p.ram_total, ram_bytes, vram)
    held = f"weights held to {vram}" if vram else f"{m.vram_bytes / 2**30:.1f} GiB of RAM for weights and activations"
    return m, f"no CUDA GPU here: running on the CPU under a CPU plan ({cost.CPU_COMPUTE_DTYPE}), {held}"


def _probe():
    from ..machines.probe import probe  # only when asked: --gpu plans need no probe

    return probe()


def _card_machine(gpu: str, ram_bytes: int | None) -> Machine:
    card = find_card(gpu)
    if card is None:
        raise UserError(unknown_card_message(gpu))
    return machine_from_card(card, ram_bytes)


def _overrides(m: Machine, vram: str | None, gpu: str | None, link_gbps: float | None, tflops: float | None,
               ram_bytes: int | None = None) -> Machine:
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
        m = replace(m, tflops=tflops, cpu_tflops=tflops if m.device == "cpu" else m.cpu_tflops)
    return m


TIER_CARD = "RTX 4060 Ti 16GB"  # the compute and link every VRAM tier of `gpus --tiers` shares
VRAM_TIERS_GB = (4, 6, 8, 12, 16, 24)


def tier_machines(ram_bytes: int) -> list[Machine]:
    """One machine per VRAM tier, alike but for VRAM (`lowvram gpus --tiers`, and what ships)."""
    base = machine_from_card(find_card(TIER_CARD), ram_bytes)
    return [replace(base, name=f"{v} GB", vram_bytes=v * 2**30) for v in VRAM_TIERS_GB]
