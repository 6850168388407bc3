"""Built-in table of common GPUs, so a user can plan for a card they don't own.

Figures are from vendor spec sheets / whitepapers; the source of each is in a comment.

Conventions
-----------
* ``vram_bytes`` is the marketed capacity in GiB (``N * 2**30``). What the driver
  reports as usable is a little less (e.g. an "80GB" H100 shows 81559 MiB).
* ``fp16_tflops`` is the *dense* (no 2:4 sparsity) FP16/BF16 tensor-core rate with
  **FP32 accumulate**, which is what PyTorch's fp16/bf16 matmuls use. On GeForce
  cards (Turing, Ampere, Ada and Blackwell alike) NVIDIA runs FP32-accumulate at half
  the FP16-accumulate rate, so this is half the headline "FP16 tensor" number; the
  professional / datacenter parts (RTX A6000, RTX 6000 Ada, L40S, A100, H100, H200)
  run it at the full rate.
  Where the card is not in a whitepaper table the figure is derived from the same
  per-SM rate the whitepaper figures imply, at NVIDIA's reference boost clock:
      GeForce Turing/Ampere/Ada/Blackwell: 512 dense FLOP/clk/SM (FP32 acc)
      Pro Ampere/Ada (GA102/AD102 parts):  1024 dense FLOP/clk/SM
  e.g. RTX 4090: 128 SM * 512 * 2.520 GHz = 165.2 TFLOP/s (= Ada whitepaper).
  Cross-check: NVIDIA's "AI TOPS" marketing figure is FP8-sparse for Ada
  (AI TOPS / 8 = this column) and FP4-sparse for GeForce Blackwell (AI TOPS / 16).
* Cards without tensor cores (Pascal, GTX 16xx) get their CUDA-core FP32 rate,
  2 * cores * boost clock: that is what fp16 inference actually runs at on them
  (consumer Pascal FP16 is 1/64 rate; GTX 16xx fp16 is commonly run in fp32 because
  of NaN/black-image problems).
* Reference sources, abbreviated below:
    [TU]  NVIDIA Turing GPU Architecture whitepaper, Appendix A (GeForce RTX
          2080 Ti / 2080 / 2070 spec tables, "Peak FP16 Tensor TFLOPS with FP32
          Accumulate").
    [GA]  NVIDIA Ampere GA102 GPU Architecture whitepaper, Appendix A (RTX 3090 /
          3080 / 3070 spec tables, same row).
    [A100] NVIDIA A100 Tensor Core GPU Architecture whitepaper, Table 1 / A100
          datasheet.
    [AD]  NVIDIA Ada GPU Architecture whitepaper, Appendix A (RTX 4090 / 4080 spec
          tables, "Peak FP16 Tensor TFLOPS with FP32 Accumulate" 165.2 / 97.5).
    [GB]  NVIDIA RTX Blackwell GPU Architecture whitepaper, Appendix A (RTX 5090 /
          5080 / 5070 Ti / 5070 spec tables, same row).
    [H]   NVIDIA H100 / H200 Tensor Core GPU datasheets.
    [TPU] TechPowerUp GPU Database (techpowerup.com/gpu-specs/), the card's page:
          SM count, boost clock, bus interface (PCIe gen and lane count).
"""

from __future__ import annotations

from dataclasses import dataclass
import re

GiB = 2**30


@dataclass(frozen=True)
class Card:
    name: str                 # e.g. "RTX 4060"
    aliases: tuple[str, ...]  # other spellings users type: "4060", "GeForce RTX 4060", "rtx4060"
    vram_bytes: int           # e.g. 8 * 2**30
    pcie_gen: int             # 3, 4, 5
    pcie_lanes: int           # 8 or 16 (the card's own electrical link width)
    fp16_tflops: float        # dense FP16/BF16 tensor TFLOP/s, FP32 accumulate (see module doc)
    bf16: bool                # computes bf16 natively (Ampere+ yes; Turing/Pascal no)
    fp8: bool                 # fp8 tensor cores (Ada/Hopper/Blackwell)
    arch: str                 # "Pascal", "Turing", "Ampere", "Ada", "Blackwell", "Hopper"

    @property
    def vram_gib(self) -> float:
        return self.vram_bytes / GiB


def _c(name, aliases, vram_gib, gen, lanes, tflops, arch):
    bf16 = arch in ("Ampere", "Ada", "Hopper", "Blackwell")
    fp8 = arch in ("Ada", "Hopper", "Blackwell")
    return Card(name, tuple(aliases), int(vram_gib * GiB), gen, lanes, float(tflops), bf16, fp8, arch)


CARDS: tuple[Card, ...] = (
    # ---------------------------------------------------------------- Pascal
    # No tensor cores; value = FP32 CUDA-core rate (2 * cores * boost). [TPU]
    # GTX 1060 6GB: 1280 cores @ 1708 MHz = 4.37 TFLOP/s; PCIe 3.0 x16. [TPU "GeForce GTX 1060 6 GB"]
    _c("GTX 1060 6GB", ("GTX 1060", "1060", "1060 6GB", "GeForce GTX 1060 6GB", "GeForce GTX 1060"),
       6, 3, 16, 4.37, "Pascal"),
    # GTX 1070: 1920 cores @ 1683 MHz = 6.46; PCIe 3.0 x16. [TPU "GeForce GTX 1070"]
    _c("GTX 1070", ("1070", "GeForce GTX 1070"), 8, 3, 16, 6.46, "Pascal"),
    # GTX 1080: 2560 cores @ 1733 MHz = 8.87; PCIe 3.0 x16. [TPU "GeForce GTX 1080"]
    _c("GTX 1080", ("1080", "GeForce GTX 1080"), 8, 3, 16, 8.87, "Pascal"),
    # GTX 1080 Ti: 3584 cores @ 1582 MHz = 11.34; PCIe 3.0 x16. [TPU "GeForce GTX 1080 Ti"]
    _c("GTX 1080 Ti", ("1080 Ti", "1080Ti", "GeForce GTX 1080 Ti"), 11, 3, 16, 11.34, "Pascal"),

    # ---------------------------------------------------------------- Turing
    # GTX 1650 (TU117, no tensor cores): 896 cores @ 1665 MHz = 2.98 TFLOP/s FP32.
    # (Its CUDA-core FP16 is 2x = 5.97 with FP16 accumulate, but GTX 16xx is
    # normally run in fp32 for image generation.) PCIe 3.0 x16. [TPU "GeForce GTX 1650"]
    _c("GTX 1650", ("1650", "GeForce GTX 1650"), 4, 3, 16, 2.98, "Turing"),
    # RTX 2060 6GB: 30 SM * 512 * 1.680 GHz = 25.8 (NVIDIA launch figure: 52 tensor
    # TFLOPS, FP16 acc = 2x). PCIe 3.0 x16. [TPU "GeForce RTX 2060"]
    _c("RTX 2060", ("2060", "GeForce RTX 2060", "RTX 2060 6GB"), 6, 3, 16, 25.8, "Turing"),
    # RTX 2070 8GB: 29.9 at reference 1620 MHz boost (31.5 for the 1710 MHz
    # Founders Edition). [TU] Appendix A, RTX 2070 table. PCIe 3.0 x16. [TPU]
    _c("RTX 2070", ("2070", "GeForce RTX 2070"), 8, 3, 16, 29.9, "Turing"),
    # RTX 2080 Ti 11GB: 53.8 at reference 1545 MHz (56.9 for the 1635 MHz FE).
    # [TU] Appendix A, RTX 2080 Ti table. PCIe 3.0 x16. [TPU]
    _c("RTX 2080 Ti", ("2080 Ti", "2080Ti", "GeForce RTX 2080 Ti"), 11, 3, 16, 53.8, "Turing"),

    # ---------------------------------------------------------------- Ampere
    # RTX 3050 8GB (GA106-150): 20 SM * 512 * 1.777 GHz = 18.2. PCIe 4.0 *x8*
    # (NVIDIA cut the link to x8; TechPowerUp RTX 3050 review). [TPU "GeForce RTX 3050 8 GB"]
    _c("RTX 3050", ("3050", "GeForce RTX 3050", "RTX 3050 8GB"), 8, 4, 8, 18.2, "Ampere"),
    # RTX 3060 12GB: 28 SM * 512 * 1.777 GHz = 25.5. PCIe 4.0 x16. [TPU "GeForce RTX 3060 12 GB"]
    _c("RTX 3060", ("3060", "GeForce RTX 3060", "RTX 3060 12GB"), 12, 4, 16, 25.5, "Ampere"),
    # RTX 3060 Ti: 38 SM * 512 * 1.665 GHz = 32.4. PCIe 4.0 x16. [TPU "GeForce RTX 3060 Ti"]
    _c("RTX 3060 Ti", ("3060 Ti", "3060Ti", "GeForce RTX 3060 Ti"), 8, 4, 16, 32.4, "Ampere"),
    # RTX 3070: 40.6. [GA] Appendix A, RTX 3070 table. PCIe 4.0 x16.
    _c("RTX 3070", ("3070", "GeForce RTX 3070"), 8, 4, 16, 40.6, "Ampere"),
    # RTX 3080 10GB: 59.5. [GA] Appendix A, RTX 3080 table. PCIe 4.0 x16.
    _c("RTX 3080", ("3080", "GeForce RTX 3080", "RTX 3080 10GB"), 10, 4, 16, 59.5, "Ampere"),
    # RTX 3090: 71.0. [GA] Appendix A, RTX 3090 table. PCIe 4.0 x16.
    _c("RTX 3090", ("3090", "GeForce RTX 3090"), 24, 4, 16, 71.0, "Ampere"),
    # RTX A6000 (pro GA102, full-rate FP32 acc): 154.8 = 309.7 sparse / 2, NVIDIA
    # RTX A6000 datasheet "Tensor Performance"; = 84 SM * 1024 * 1.800 GHz. PCIe 4.0 x16.
    _c("RTX A6000", ("A6000", "NVIDIA RTX A6000"), 48, 4, 16, 154.8, "Ampere"),
    # A100 40GB / 80GB: 312 dense FP16 and BF16 tensor (624 sparse). [A100] Table 1.
    # These are the SXM4 figures; the PCIe cards list the same peak but sustain less
    # at 250-300 W. Host link is PCIe 4.0 x16 on both SXM4 and PCIe boards.
    _c("A100 40GB", ("A100", "A100-SXM4-40GB", "A100-PCIE-40GB", "A100 PCIe 40GB", "A100 SXM4 40GB"),
       40, 4, 16, 312.0, "Ampere"),
    _c("A100 80GB", ("A100-SXM4-80GB", "A100 80GB PCIe", "A100-PCIE-80GB", "A100 SXM4 80GB"),
       80, 4, 16, 312.0, "Ampere"),

    # ---------------------------------------------------------------- Ada
    # RTX 4060: 24 SM * 512 * 2.460 GHz = 30.2 (242 AI TOPS / 8). PCIe 4.0 *x8*. [TPU "GeForce RTX 4060"]
    _c("RTX 4060", ("4060", "GeForce RTX 4060"), 8, 4, 8, 30.2, "Ada"),
    # RTX 4060 Ti 8GB / 16GB (same AD106 config): 34 SM * 512 * 2.535 GHz = 44.1
    # (353 AI TOPS / 8). PCIe 4.0 *x8* (TechPowerUp RTX 5060 Ti x8-scaling review
    # recaps the AD106 x8 link). [TPU "GeForce RTX 4060 Ti 8 GB" / "... 16 GB"]
    _c("RTX 4060 Ti 8GB", ("RTX 4060 Ti", "4060 Ti", "4060Ti", "GeForce RTX 4060 Ti"), 8, 4, 8, 44.1, "Ada"),
    _c("RTX 4060 Ti 16GB", ("4060 Ti 16GB", "4060Ti 16GB", "GeForce RTX 4060 Ti 16GB"), 16, 4, 8, 44.1, "Ada"),
    # RTX 4070: 46 SM * 512 * 2.475 GHz = 58.3 (466 AI TOPS / 8). PCIe 4.0 x16. [TPU "GeForce RTX 4070"]
    _c("RTX 4070", ("4070", "GeForce RTX 4070"), 12, 4, 16, 58.3, "Ada"),
    # RTX 4070 Ti SUPER (AD103): 66 SM * 512 * 2.610 GHz = 88.2 (706 AI TOPS / 8).
    # PCIe 4.0 x16. [TPU "GeForce RTX 4070 Ti SUPER"]
    _c("RTX 4070 Ti Super", ("4070 Ti Super", "4070 Ti S", "4070TiS", "GeForce RTX 4070 Ti SUPER"),
       16, 4, 16, 88.2, "Ada"),
    # RTX 4080 16GB: 97.5. [AD] Appendix A, RTX 4080 16GB table. PCIe 4.0 x16.
    _c("RTX 4080", ("4080", "GeForce RTX 4080", "RTX 4080 16GB"), 16, 4, 16, 97.5, "Ada"),
    # RTX 4090: 165.2. [AD] Appendix A, RTX 4090 table. PCIe 4.0 x16.
    _c("RTX 4090", ("4090", "GeForce RTX 4090"), 24, 4, 16, 165.2, "Ada"),
    # RTX 6000 Ada (pro AD102, full-rate FP32 acc): 142 SM * 1024 * 2.505 GHz = 364.2
    # (= datasheet "Tensor Performance" 1,457 FP8-sparse / 4). PCIe 4.0 x16.
    # NVIDIA RTX 6000 Ada Generation datasheet.
    _c("RTX 6000 Ada", ("6000 Ada", "RTX 6000 Ada Generation", "NVIDIA RTX 6000 Ada Generation"),
       48, 4, 16, 364.2, "Ada"),
    # L40S: 362.05 dense FP16/BF16 tensor (733 sparse). NVIDIA L40S datasheet. PCIe 4.0 x16.
    _c("L40S", ("NVIDIA L40S",), 48, 4, 16, 362.05, "Ada"),

    # ---------------------------------------------------------------- Blackwell (GeForce, sm_120)
    # RTX 5060 Ti 16GB: 36 SM * 512 * 2.572 GHz = 47.4 (759 AI TOPS / 16; a cuBLAS
    # run measured 47.0 FP32-acc vs 87.9 FP16-acc, github.com/QuantumDrizzy/BLACKWALL).
    # PCIe 5.0 *x8* (TechPowerUp "RTX 5060 Ti PCI-Express x8 Scaling"). [TPU]
    _c("RTX 5060 Ti", ("5060 Ti", "5060Ti", "GeForce RTX 5060 Ti", "RTX 5060 Ti 16GB"), 16, 5, 8, 47.4, "Blackwell"),
    # RTX 5070: 48 SM * 512 * 2.512 GHz = 61.7 (988 AI TOPS / 16). [GB] Appendix A. PCIe 5.0 x16.
    _c("RTX 5070", ("5070", "GeForce RTX 5070"), 12, 5, 16, 61.7, "Blackwell"),
    # RTX 5080: 84 SM * 512 * 2.617 GHz = 112.6 (1801 AI TOPS / 16). [GB] Appendix A. PCIe 5.0 x16.
    _c("RTX 5080", ("5080", "GeForce RTX 5080"), 16, 5, 16, 112.6, "Blackwell"),
    # RTX 5090: 170 SM * 512 * 2.407 GHz = 209.5 (838 sparse FP16-acc / 4;
    # 3352 AI TOPS / 16). [GB] Appendix A. PCIe 5.0 x16.
    _c("RTX 5090", ("5090", "GeForce RTX 5090"), 32, 5, 16, 209.5, "Blackwell"),

    # ---------------------------------------------------------------- Hopper
    # H100 PCIe 80GB: 756.5 dense FP16/BF16 (1,513 sparse / 2). [H] H100 datasheet,
    # "H100 PCIe" column. PCIe 5.0 x16.
    _c("H100 PCIe", ("H100", "H100 80GB", "H100 PCIe 80GB", "NVIDIA H100 PCIe"), 80, 5, 16, 756.5, "Hopper"),
    # H100 SXM5 80GB (extra row so torch's "NVIDIA H100 80GB HBM3" resolves):
    # 989.4 dense (1,979 sparse / 2). [H] H100 datasheet, "H100 SXM" column.
    # Host link PCIe 5.0 x16.
    _c("H100 SXM", ("H100 SXM5", "H100 80GB HBM3", "NVIDIA H100 80GB HBM3", "H100-SXM5-80GB"),
       80, 5, 16, 989.4, "Hopper"),
    # H200 141GB: SXM figure, 989.4 dense (1,979 sparse / 2); the H200 NVL (PCIe)
    # is 835.5. [H] H200 datasheet. Host link PCIe 5.0 x16. nvidia-smi reports
    # ~140 GiB usable (143771 MiB).
    _c("H200", ("H200 141GB", "H200 SXM", "NVIDIA H200"), 141, 5, 16, 989.4, "Hopper"),
)


# --------------------------------------------------------------------------- lookup

_DROP_WORDS = re.compile(r"\b(nvidia|geforce)\b")
_PREFIX = re.compile(r"^(rtx|gtx)")


def _norm(s: str) -> str:
    s = _DROP_WORDS.sub(" ", s.lower())
    return re.sub(r"[^a-z0-9]", "", s)


def _keys(card: Card) -> set[str]:
    keys: set[str] = set()
    for s in (card.name, *card.aliases):
        k = _norm(s)
        keys.update({k, _PREFIX.sub("", k)})
    gib = round(card.vram_gib)
    keys.update({k + f"{gib}gb" for k in list(keys) if not k.endswith("gb")})
    keys.discard("")
    return keys


def _build_index() -> dict[str, Card]:
    index: dict[str, Card] = {}
    for card in CARDS:  # first row wins on a shared key (e.g. "4060ti" -> the 8GB row)
        for k in _keys(card):
            index.setdefault(k, card)
    return index


_INDEX = _build_index()


def find_card(name: str) -> Card | None:
    """Card matching ``name``, ignoring case, spaces, hyphens and "NVIDIA"/"GeForce".

    Accepts what ``torch.cuda.get_device_name()`` returns ("NVIDIA GeForce RTX 4090"),
    bare model numbers ("4090"), and an optional VRAM suffix ("4060 Ti 16GB").
    A name shared by several VRAM variants resolves to the first (smallest) row.
    """
    k = _norm(name)
    if not k:
        return None
    return _INDEX.get(k) or _INDEX.get(_PREFIX.sub("", k))


# --------------------------------------------------------------------------- PCIe

# Realistic pinned host->device copy rate for an x16 link, per PCIe generation.
# Raw link rates (PCI-SIG; 128b/130b encoding): gen3 15.75, gen4 31.5, gen5 63.0 GB/s
# per direction at x16. Copies achieve ~80-90% of that:
#  gen3: ~12 GB/s ingress on a gen3 x16 V100 (BaM authors, github.com/ZaidQureshi/bam
#        issue #54); ~11.8 GB/s measured on a GTX 1660 Ti (github.com/vetter/shoc #79).
PCIE_GEN3_X16_BYTES_PER_S = 12.0e9
#  gen4: 25-26 GB/s: RTX 4090 nvbandwidth host_to_device_memcpy_ce 24-26.4 GB/s
#        (github.com/NVIDIA/nvbandwidth issue #15); A100-SXM4 25.1 GB/s (issue #42).
PCIE_GEN4_X16_BYTES_PER_S = 25.0e9
#  gen5: 50-57 GB/s: RTX 5090 host_to_device_memcpy_ce 56.3 GB/s on a server board
#        (github.com/tinygrad/open-gpu-kernel-modules issue #29); H100 ~57 GB/s
#        (NVIDIA/nvbandwidth issue #6). 50 is the conservative end for desktops.
PCIE_GEN5_X16_BYTES_PER_S = 50.0e9

_X16_BY_GEN = {3: PCIE_GEN3_X16_BYTES_PER_S, 4: PCIE_GEN4_X16_BYTES_PER_S, 5: PCIE_GEN5_X16_BYTES_PER_S}


def pcie_bandwidth_bytes_per_s(card: Card, host_pcie_gen: int | None = None) -> float:
    """Realistic pinned host->device bandwidth for ``card``'s own link.

    Scales linearly with lane count (x8 = half of x16). If ``host_pcie_gen`` is
    given, the link runs at the lower of the card's and the slot's generation
    (e.g. an RTX 4060, gen4 x8, in a gen3 board gets ~6 GB/s).
    """
    gen = card.pcie_gen if host_pcie_gen is None else min(card.pcie_gen, host_pcie_gen)
    gen = max(3, min(5, gen))
    return _X16_BY_GEN[gen] * card.pcie_lanes / 16


if __name__ == "__main__":
    print(f"{'name':<18} {'arch':<10} {'VRAM':>6} {'PCIe':>7} {'H2D GB/s':>9} "
          f"{'FP16 TF':>8} {'bf16':>5} {'fp8':>4}")
    for c in CARDS:
        print(f"{c.name:<18} {c.arch:<10} {c.vram_gib:>4.0f}GB {f'{c.pcie_gen}.0x{c.pcie_lanes}':>7} "
              f"{pcie_bandwidth_bytes_per_s(c) / 1e9:>9.1f} {c.fp16_tflops:>8.1f} "
              f"{'yes' if c.bf16 else 'no':>5} {'yes' if c.fp8 else 'no':>4}")
    for q in ("rtx 4060", "NVIDIA GeForce RTX 4090", "4060 Ti 16GB", "NVIDIA A100-SXM4-80GB", "gtx1080ti"):
        c = find_card(q)
        assert c is not None, q
        print(f"find_card({q!r}) -> {c.name}")
