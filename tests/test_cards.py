"""The card table: the cards people have, each complete, found by the names drivers and people use."""

from collections import defaultdict

import pytest

from lowvram.machines.cards import CARDS, _keys, find_card, pcie_bandwidth_bytes_per_s, suggest_cards, unknown_card_message

# Every GeForce desktop card of the 10-50 series that can hold a diffusion model, the laptop parts, and
# common workstation, AMD (ROCm) and Apple (MPS) parts.
EXPECTED = [
    "GTX 1050 Ti", "GTX 1060 3GB", "GTX 1060 6GB", "GTX 1070", "GTX 1070 Ti", "GTX 1080", "GTX 1080 Ti",
    "GTX 1630", "GTX 1650", "GTX 1650 Super", "GTX 1660", "GTX 1660 Super", "GTX 1660 Ti",
    "RTX 2060", "RTX 2060 12GB", "RTX 2060 Super", "RTX 2070", "RTX 2070 Super", "RTX 2080", "RTX 2080 Super", "RTX 2080 Ti",
    "RTX 3050", "RTX 3050 6GB", "RTX 3060", "RTX 3060 8GB", "RTX 3060 Ti", "RTX 3070", "RTX 3070 Ti", "RTX 3080",
    "RTX 3080 12GB", "RTX 3080 Ti", "RTX 3090", "RTX 3090 Ti",
    "RTX 4060", "RTX 4060 Ti 8GB", "RTX 4060 Ti 16GB", "RTX 4070", "RTX 4070 Super", "RTX 4070 Ti", "RTX 4070 Ti Super",
    "RTX 4080", "RTX 4080 Super", "RTX 4090",
    "RTX 5050", "RTX 5060", "RTX 5060 Ti", "RTX 5060 Ti 8GB", "RTX 5070", "RTX 5070 Ti", "RTX 5080", "RTX 5090",
    "GTX 1060 Laptop", "GTX 1650 Laptop", "RTX 2060 Laptop", "RTX 3050 Laptop", "RTX 3060 Laptop", "RTX 3070 Laptop",
    "RTX 3080 Laptop", "RTX 4050 Laptop", "RTX 4060 Laptop", "RTX 4070 Laptop", "RTX 4080 Laptop", "RTX 4090 Laptop",
    "RTX 5060 Laptop", "RTX 5070 Laptop", "RTX 5070 Ti Laptop", "RTX 5080 Laptop", "RTX 5090 Laptop",
    "RTX A2000", "RTX A4000", "RTX A5000", "RTX A6000", "RTX 4000 Ada", "RTX 6000 Ada", "T4", "L4", "A10",
    "RX 7600", "RX 7800 XT", "RX 7900 XTX", "RX 9070 XT", "M1", "M2 Max", "M3 Pro", "M4 Max",
]


def test_the_cards_people_have_are_there_and_complete():
    names = [c.name for c in CARDS]
    assert len(names) == len(set(names))
    assert [n for n in EXPECTED if n not in names] == []
    for c in CARDS:
        assert c.vram_bytes > 0 and c.fp16_tflops > 0 and c.mem_gbs > 0, c.name
        assert c.unified or (c.pcie_gen in (3, 4, 5) and c.pcie_lanes in (4, 8, 16)), c.name
        assert c.vendor in ("nvidia", "amd", "apple") and c.form in ("desktop", "laptop", "workstation", "datacenter", "soc")


def test_no_spelling_finds_two_cards():
    owners = defaultdict(set)
    for c in CARDS:
        for k in _keys(c):
            owners[k].add(c.name)
    assert {k: v for k, v in owners.items() if len(v) > 1} == {}


@pytest.mark.parametrize("query,name", [
    ("RTX 2080", "RTX 2080"), ("rtx 2070 super", "RTX 2070 Super"), ("GeForce RTX 3070 Ti", "RTX 3070 Ti"),
    ("4070 Super", "RTX 4070 Super"), ("NVIDIA GeForce RTX 4060 Laptop GPU", "RTX 4060 Laptop"),
    ("RTX 3060 Mobile", "RTX 3060 Laptop"), ("AMD Radeon RX 7900 XTX", "RX 7900 XTX"), ("Apple M2 Max", "M2 Max"),
    ("Tesla T4", "T4"), ("NVIDIA GeForce RTX 4090", "RTX 4090"),
])
def test_driver_and_everyday_names(query, name):
    assert find_card(query).name == name


def test_laptops_have_their_narrow_links_and_lower_clocks():
    desk, lap = find_card("RTX 4060"), find_card("RTX 4060 Laptop")
    assert lap.form == "laptop" and lap.pcie_lanes == 8 and lap.fp16_tflops < desk.fp16_tflops


def test_unified_memory_has_no_bus_to_cross():
    m = find_card("M2 Max")
    assert m.unified and m.vendor == "apple" and not m.bf16
    assert pcie_bandwidth_bytes_per_s(m) == m.mem_gbs * 1e9


def test_unknown_names_get_the_nearest_and_the_way_out():
    assert suggest_cards("RTX 2080 Supr")[0] == "RTX 2080 Super"
    assert "RTX 4060 Laptop" in suggest_cards("rtx 4060 laptp")
    msg = unknown_card_message("RTX 9090")
    assert "did you mean" in msg and "RTX 5090" in msg and "--vram" in msg and "--tflops" in msg
    assert suggest_cards("banana") == [] and "did you mean" not in unknown_card_message("banana")


def test_unified_memory_is_one_budget():
    """An Apple M-series chip plans its GPU share of one memory as VRAM and only the rest as RAM."""
    from lowvram.machines.cards import CARDS
    from lowvram.plan.machine import UNIFIED_GPU_SHARE, machine_from_card

    apple = next(c for c in CARDS if c.unified)
    m = machine_from_card(apple, 32 * 2**30)
    assert m.vram_bytes + m.ram_bytes == 32 * 2**30
    assert m.vram_bytes == int(32 * 2**30 * UNIFIED_GPU_SHARE)
    d = machine_from_card(apple)  # the card's own (smallest) memory
    assert d.vram_bytes + d.ram_bytes == apple.vram_bytes
    nvidia = next(c for c in CARDS if not c.unified)
    assert machine_from_card(nvidia, 32 * 2**30).vram_bytes == nvidia.vram_bytes


def test_the_gpu_guide_names_only_lossy_precisions():
    """fp32 on a card without bf16 (Pascal) is the exact dtype there: the guide's cell says how the denoiser runs
    (resident / streamed), as for bf16 cards, and names only 8-bit or GGUF precisions."""
    from lowvram.catalogue import get_model
    from lowvram.guide import plan_class
    from lowvram.plan import Policy, Workload, make_plan
    from lowvram.plan.machine import machine_from_card

    spec = get_model("sd3-medium")
    plan = make_plan(spec, Workload(spec.width, spec.height), machine_from_card(find_card("GTX 1060 6GB"), 32 << 30),
                     Policy("lossless"))
    assert {c.precision for c in plan.components if c.role == "denoiser"} == {"fp32"}
    assert plan_class(plan).split()[0] in ("resident", "streamed"), plan_class(plan)
