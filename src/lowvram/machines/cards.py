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
          SM count, boost clock, memory bandwidth, bus interface (PCIe gen and lane count).
    [NV]  NVIDIA's product page / spec table for the card (VRAM, memory bandwidth,
          "AI TOPS"; for laptops the top of the TGP range).
    [AMD] AMD's product page for the card ("Peak Half Precision Compute", which on
          RDNA3/RDNA4 is the WMMA matrix rate; memory bandwidth; PCIe).
    [APL] Apple's M-series press releases / tech specs (GPU cores, memory bandwidth)
          and the GPU FP32 rate (cores * 128 ALUs * 2 * clock) reported by
          Notebookcheck; Apple GPUs run fp16 at the fp32 rate.
* ``mem_gbs`` is the card's memory bandwidth in GB/s (10^9 B/s), from the same source.
* Laptop parts ("... Laptop"): NVIDIA sells one chip across a 35-175 W range of
  TGP, so clocks differ 2x between a thin and a thick laptop. Ada and Blackwell
  laptop rows take NVIDIA's AI TOPS (the top of the range) / 8 or / 16, as desktops;
  Turing and Ampere laptop rows take TechPowerUp's boost clock (the lower, reference
  one). Either way `--tflops` overrides. Laptop links are the chip's own (AD107 and
  GB206/207 are x8); some designs wire fewer lanes.
* AMD cards plan for PyTorch on ROCm (Linux): RDNA3/RDNA4 Radeon RX 7000/9000 and
  Radeon PRO W7000, which ROCm supports. bf16 yes (WMMA), fp8 no (torch's fp8
  matmuls are CUDA/MI300 only).
* Apple M-series (PyTorch's MPS backend) have unified memory: VRAM and RAM are one
  budget, shared with the system. ``unified`` marks them; ``vram_bytes`` is the
  smallest memory the chip ships with (give `--vram`/`--ram` for yours), the link is
  the memory bandwidth (no bus to cross), and they compute in fp16 (bf16 is not
  native on their GPUs).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

GiB = 2**30


@dataclass(frozen=True)
class Card:
    name: str                 # e.g. "RTX 4060"
    aliases: tuple[str, ...]  # other spellings users type: "4060", "GeForce RTX 4060", "rtx4060"
    vram_bytes: int           # e.g. 8 * 2**30
    pcie_gen: int             # 3, 4, 5 (0: no bus, unified memory)
    pcie_lanes: int           # 4, 8 or 16 (the card's own electrical link width)
    fp16_tflops: float        # dense FP16/BF16 tensor TFLOP/s, FP32 accumulate (see module doc)
    bf16: bool                # computes bf16 natively (Ampere+ yes; Turing/Pascal no)
    fp8: bool                 # fp8 tensor cores (Ada/Hopper/Blackwell)
    arch: str                 # "Pascal", "Turing", "Ampere", "Ada", "Blackwell", "Hopper", "RDNA3", "Apple M2"...
    mem_gbs: float = 0.0      # memory bandwidth, GB/s
    vendor: str = "nvidia"    # "nvidia" (CUDA), "amd" (ROCm), "apple" (MPS)
    form: str = "desktop"     # "desktop", "laptop", "workstation", "datacenter", "soc"
    unified: bool = False     # VRAM and RAM are one memory (Apple M-series)

    @property
    def vram_gib(self) -> float:
        return self.vram_bytes / GiB


NATIVE_BF16 = ("Ampere", "Ada", "Hopper", "Blackwell", "RDNA3", "RDNA4")
NATIVE_FP8 = ("Ada", "Hopper", "Blackwell")


def _c(name, aliases, vram_gib, gen, lanes, tflops, arch, mem_gbs=0.0, **kw):
    bf16 = arch in NATIVE_BF16
    fp8 = arch in NATIVE_FP8
    return Card(name, tuple(aliases), int(vram_gib * GiB), gen, lanes, float(tflops), bf16, fp8, arch, float(mem_gbs), **kw)


def _laptop(name, aliases, vram_gib, gen, lanes, tflops, arch, mem_gbs):
    """A GeForce laptop part: the names drivers and people use ("... Laptop GPU", "... Mobile", "... Max-Q")."""
    short = name.replace(" Laptop", "")
    more = (f"{short} Laptop GPU", f"{short} Mobile", f"{short} Max-Q", f"GeForce {short} Laptop GPU")
    return _c(name, tuple(aliases) + more, vram_gib, gen, lanes, tflops, arch, mem_gbs, form="laptop")


def _amd(name, aliases, vram_gib, gen, lanes, tflops, arch, mem_gbs, form="desktop"):
    return _c(name, tuple(aliases) + (f"AMD Radeon {name}", f"Radeon {name}"), vram_gib, gen, lanes, tflops, arch, mem_gbs,
              vendor="amd", form=form)


def _apple(name, vram_gib, tflops, mem_gbs):
    return _c(name, (f"Apple {name}",), vram_gib, 0, 0, tflops, f"Apple {name.split()[0]}", mem_gbs, vendor="apple",
              form="soc", unified=True)


CARDS: tuple[Card, ...] = (
    # ---------------------------------------------------------------- Pascal (GeForce 10)
    # No tensor cores; value = FP32 CUDA-core rate (2 * cores * boost). [TPU] (cores, boost, bandwidth, bus)
    # (GT 1030 left out: 2 GB, PCIe 3.0 x4 and 1.1 TFLOP/s hold no catalogue model; --vram 2GB --tflops 1.1 plans it.)
    # GTX 1050 2GB: 640 @ 1455 = 1.86; 112 GB/s; PCIe 3.0 x16.
    _c("GTX 1050", ("1050", "GeForce GTX 1050"), 2, 3, 16, 1.86, "Pascal", 112),
    # GTX 1050 Ti: 768 @ 1392 = 2.14; 4 GB; 112 GB/s; PCIe 3.0 x16.
    _c("GTX 1050 Ti", ("1050 Ti", "1050Ti", "GeForce GTX 1050 Ti"), 4, 3, 16, 2.14, "Pascal", 112),
    # GTX 1060 3GB: 1152 @ 1708 = 3.94; 192 GB/s; PCIe 3.0 x16.
    _c("GTX 1060 3GB", ("1060 3GB", "GeForce GTX 1060 3GB"), 3, 3, 16, 3.94, "Pascal", 192),
    # GTX 1060 6GB: 1280 cores @ 1708 MHz = 4.37 TFLOP/s; 192 GB/s; PCIe 3.0 x16. [TPU "GeForce GTX 1060 6 GB"]
    _c("GTX 1060 6GB", ("GTX 1060", "1060", "1060 6GB", "GeForce GTX 1060 6GB", "GeForce GTX 1060"),
       6, 3, 16, 4.37, "Pascal", 192),
    # GTX 1070: 1920 cores @ 1683 MHz = 6.46; 256 GB/s; PCIe 3.0 x16. [TPU "GeForce GTX 1070"]
    _c("GTX 1070", ("1070", "GeForce GTX 1070"), 8, 3, 16, 6.46, "Pascal", 256),
    # GTX 1070 Ti: 2432 @ 1683 = 8.19; 256 GB/s; PCIe 3.0 x16.
    _c("GTX 1070 Ti", ("1070 Ti", "1070Ti", "GeForce GTX 1070 Ti"), 8, 3, 16, 8.19, "Pascal", 256),
    # GTX 1080: 2560 cores @ 1733 MHz = 8.87; 320 GB/s; PCIe 3.0 x16. [TPU "GeForce GTX 1080"]
    _c("GTX 1080", ("1080", "GeForce GTX 1080"), 8, 3, 16, 8.87, "Pascal", 320),
    # GTX 1080 Ti: 3584 cores @ 1582 MHz = 11.34; 484 GB/s; PCIe 3.0 x16. [TPU "GeForce GTX 1080 Ti"]
    _c("GTX 1080 Ti", ("1080 Ti", "1080Ti", "GeForce GTX 1080 Ti"), 11, 3, 16, 11.34, "Pascal", 484),
    # TITAN Xp: 3840 @ 1582 = 12.15; 12 GB; 547.6 GB/s; PCIe 3.0 x16.
    _c("TITAN Xp", ("Titan Xp", "NVIDIA TITAN Xp"), 12, 3, 16, 12.15, "Pascal", 547.6),
    # Laptops (MXM / on-board, PCIe 3.0 x16): [TPU "... Mobile"]
    # GTX 1050 Mobile: 640 @ 1493 = 1.91; 4 GB; 112 GB/s.
    _laptop("GTX 1050 Laptop", (), 4, 3, 16, 1.91, "Pascal", 112),
    # GTX 1050 Ti Mobile: 768 @ 1620 = 2.49; 4 GB; 112 GB/s.
    _laptop("GTX 1050 Ti Laptop", (), 4, 3, 16, 2.49, "Pascal", 112),
    # GTX 1060 Mobile: 1280 @ 1670 = 4.28; 6 GB; 192 GB/s.
    _laptop("GTX 1060 Laptop", (), 6, 3, 16, 4.28, "Pascal", 192),
    # GTX 1070 Mobile: 2048 @ 1645 = 6.74; 8 GB; 256 GB/s.
    _laptop("GTX 1070 Laptop", (), 8, 3, 16, 6.74, "Pascal", 256),
    # GTX 1080 Mobile: 2560 @ 1733 = 8.87; 8 GB; 320 GB/s.
    _laptop("GTX 1080 Laptop", (), 8, 3, 16, 8.87, "Pascal", 320),

    # ---------------------------------------------------------------- Turing GTX 16 (no tensor cores)
    # FP32 CUDA-core rate: GTX 16xx fp16 is normally run in fp32 for image generation (NaN/black images).
    # GTX 1630: 512 @ 1785 = 1.83; 4 GB; 96 GB/s; PCIe 3.0 x8. [TPU]
    _c("GTX 1630", ("1630", "GeForce GTX 1630"), 4, 3, 8, 1.83, "Turing", 96),
    # GTX 1650 (TU117, no tensor cores): 896 cores @ 1665 MHz = 2.98 TFLOP/s FP32; 128 GB/s.
    # (Its CUDA-core FP16 is 2x = 5.97 with FP16 accumulate, but GTX 16xx is
    # normally run in fp32 for image generation.) PCIe 3.0 x16. [TPU "GeForce GTX 1650"]
    _c("GTX 1650", ("1650", "GeForce GTX 1650"), 4, 3, 16, 2.98, "Turing", 128),
    # GTX 1650 SUPER: 1280 @ 1725 = 4.42; 4 GB; 192 GB/s; PCIe 3.0 x16. [TPU]
    _c("GTX 1650 Super", ("1650 Super", "GeForce GTX 1650 SUPER"), 4, 3, 16, 4.42, "Turing", 192),
    # GTX 1660: 1408 @ 1785 = 5.03; 6 GB; 192 GB/s. GTX 1660 SUPER: same core, 336 GB/s. GTX 1660 Ti:
    # 1536 @ 1770 = 5.44; 288 GB/s. All PCIe 3.0 x16. [TPU]
    _c("GTX 1660", ("1660", "GeForce GTX 1660"), 6, 3, 16, 5.03, "Turing", 192),
    _c("GTX 1660 Super", ("1660 Super", "GeForce GTX 1660 SUPER"), 6, 3, 16, 5.03, "Turing", 336),
    _c("GTX 1660 Ti", ("1660 Ti", "1660Ti", "GeForce GTX 1660 Ti"), 6, 3, 16, 5.44, "Turing", 288),
    # Laptops: GTX 1650 Mobile 1024 @ 1560 = 3.19, 128 GB/s; GTX 1650 Ti Mobile 1024 @ 1485 = 3.04,
    # 192 GB/s; GTX 1660 Ti Mobile 1536 @ 1590 = 4.88, 288 GB/s. PCIe 3.0 x16. [TPU]
    _laptop("GTX 1650 Laptop", (), 4, 3, 16, 3.19, "Turing", 128),
    _laptop("GTX 1650 Ti Laptop", (), 4, 3, 16, 3.04, "Turing", 192),
    _laptop("GTX 1660 Ti Laptop", (), 6, 3, 16, 4.88, "Turing", 288),

    # ---------------------------------------------------------------- Turing RTX 20
    # RTX 2060 6GB: 30 SM * 512 * 1.680 GHz = 25.8 (NVIDIA launch figure: 52 tensor
    # TFLOPS, FP16 acc = 2x); 336 GB/s. PCIe 3.0 x16. [TPU "GeForce RTX 2060"]
    _c("RTX 2060", ("2060", "GeForce RTX 2060", "RTX 2060 6GB"), 6, 3, 16, 25.8, "Turing", 336),
    # RTX 2060 12GB: 34 SM * 512 * 1.650 = 28.7; 336 GB/s. RTX 2060 SUPER: same SMs and clock, 8 GB, 448 GB/s. [TPU]
    _c("RTX 2060 12GB", ("2060 12GB", "GeForce RTX 2060 12GB"), 12, 3, 16, 28.7, "Turing", 336),
    _c("RTX 2060 Super", ("2060 Super", "GeForce RTX 2060 SUPER"), 8, 3, 16, 28.7, "Turing", 448),
    # RTX 2070 8GB: 29.9 at reference 1620 MHz boost (31.5 for the 1710 MHz
    # Founders Edition); 448 GB/s. [TU] Appendix A, RTX 2070 table. PCIe 3.0 x16. [TPU]
    _c("RTX 2070", ("2070", "GeForce RTX 2070"), 8, 3, 16, 29.9, "Turing", 448),
    # RTX 2070 SUPER: 40 SM * 512 * 1.770 = 36.3; 448 GB/s. [TPU]
    _c("RTX 2070 Super", ("2070 Super", "GeForce RTX 2070 SUPER"), 8, 3, 16, 36.3, "Turing", 448),
    # RTX 2080: 40.3 at reference 1710 MHz (46 SM * 512 * 1.710). [TU] Appendix A, RTX 2080 table; 448 GB/s.
    _c("RTX 2080", ("2080", "GeForce RTX 2080"), 8, 3, 16, 40.3, "Turing", 448),
    # RTX 2080 SUPER: 48 SM * 512 * 1.815 = 44.6; 496 GB/s. [TPU]
    _c("RTX 2080 Super", ("2080 Super", "GeForce RTX 2080 SUPER"), 8, 3, 16, 44.6, "Turing", 496),
    # RTX 2080 Ti 11GB: 53.8 at reference 1545 MHz (56.9 for the 1635 MHz FE); 616 GB/s.
    # [TU] Appendix A, RTX 2080 Ti table. PCIe 3.0 x16. [TPU]
    _c("RTX 2080 Ti", ("2080 Ti", "2080Ti", "GeForce RTX 2080 Ti"), 11, 3, 16, 53.8, "Turing", 616),
    # TITAN RTX: full-rate FP32 accumulate, 130.5 (NVIDIA TITAN RTX spec: 130 tensor TFLOPS); 24 GB; 672 GB/s.
    _c("TITAN RTX", ("Titan RTX", "NVIDIA TITAN RTX"), 24, 3, 16, 130.5, "Turing", 672),
    # Laptops, TPU boost (the reference, low end): RTX 2060 Mobile 30 SM @ 1200 = 18.4, 336 GB/s;
    # RTX 2070 Mobile 36 @ 1305 = 24.1, 448; RTX 2070 SUPER Mobile 40 @ 1380 = 28.3, 448;
    # RTX 2080 Mobile 46 @ 1590 = 37.4, 448; RTX 2080 SUPER Mobile 48 @ 1560 = 38.3, 448. PCIe 3.0 x16.
    _laptop("RTX 2060 Laptop", (), 6, 3, 16, 18.4, "Turing", 336),
    _laptop("RTX 2070 Laptop", (), 8, 3, 16, 24.1, "Turing", 448),
    _laptop("RTX 2070 Super Laptop", (), 8, 3, 16, 28.3, "Turing", 448),
    _laptop("RTX 2080 Laptop", (), 8, 3, 16, 37.4, "Turing", 448),
    _laptop("RTX 2080 Super Laptop", (), 8, 3, 16, 38.3, "Turing", 448),

    # ---------------------------------------------------------------- Ampere RTX 30
    # RTX 3050 6GB (GA107): 18 SM * 512 * 1.470 = 13.5; 168 GB/s; PCIe 4.0 x8. [TPU "GeForce RTX 3050 6 GB"]
    _c("RTX 3050 6GB", ("3050 6GB", "GeForce RTX 3050 6GB"), 6, 4, 8, 13.5, "Ampere", 168),
    # RTX 3050 8GB (GA106-150): 20 SM * 512 * 1.777 GHz = 18.2; 224 GB/s. PCIe 4.0 *x8*
    # (NVIDIA cut the link to x8; TechPowerUp RTX 3050 review). [TPU "GeForce RTX 3050 8 GB"]
    _c("RTX 3050", ("3050", "GeForce RTX 3050", "RTX 3050 8GB"), 8, 4, 8, 18.2, "Ampere", 224),
    # RTX 3060 8GB: same GA106 config, 128-bit bus: 240 GB/s. [TPU "GeForce RTX 3060 8 GB"]
    _c("RTX 3060 8GB", ("3060 8GB", "GeForce RTX 3060 8GB"), 8, 4, 16, 25.5, "Ampere", 240),
    # RTX 3060 12GB: 28 SM * 512 * 1.777 GHz = 25.5; 360 GB/s. PCIe 4.0 x16. [TPU "GeForce RTX 3060 12 GB"]
    _c("RTX 3060", ("3060", "GeForce RTX 3060", "RTX 3060 12GB"), 12, 4, 16, 25.5, "Ampere", 360),
    # RTX 3060 Ti: 38 SM * 512 * 1.665 GHz = 32.4; 448 GB/s. PCIe 4.0 x16. [TPU "GeForce RTX 3060 Ti"]
    _c("RTX 3060 Ti", ("3060 Ti", "3060Ti", "GeForce RTX 3060 Ti"), 8, 4, 16, 32.4, "Ampere", 448),
    # RTX 3070: 40.6; 448 GB/s. [GA] Appendix A, RTX 3070 table. PCIe 4.0 x16.
    _c("RTX 3070", ("3070", "GeForce RTX 3070"), 8, 4, 16, 40.6, "Ampere", 448),
    # RTX 3070 Ti: 48 SM * 512 * 1.770 = 43.5; 608 GB/s (GDDR6X). [TPU]
    _c("RTX 3070 Ti", ("3070 Ti", "3070Ti", "GeForce RTX 3070 Ti"), 8, 4, 16, 43.5, "Ampere", 608),
    # RTX 3080 10GB: 59.5; 760 GB/s. [GA] Appendix A, RTX 3080 table. PCIe 4.0 x16.
    _c("RTX 3080", ("3080", "GeForce RTX 3080", "RTX 3080 10GB"), 10, 4, 16, 59.5, "Ampere", 760),
    # RTX 3080 12GB: 70 SM * 512 * 1.710 = 61.3; 912 GB/s. RTX 3080 Ti: 80 SM * 512 * 1.665 = 68.2; 912 GB/s. [TPU]
    _c("RTX 3080 12GB", ("3080 12GB", "GeForce RTX 3080 12GB"), 12, 4, 16, 61.3, "Ampere", 912),
    _c("RTX 3080 Ti", ("3080 Ti", "3080Ti", "GeForce RTX 3080 Ti"), 12, 4, 16, 68.2, "Ampere", 912),
    # RTX 3090: 71.0; 936 GB/s. [GA] Appendix A, RTX 3090 table. PCIe 4.0 x16.
    _c("RTX 3090", ("3090", "GeForce RTX 3090"), 24, 4, 16, 71.0, "Ampere", 936),
    # RTX 3090 Ti: 84 SM * 512 * 1.860 = 80.0; 1008 GB/s. [TPU]
    _c("RTX 3090 Ti", ("3090 Ti", "3090Ti", "GeForce RTX 3090 Ti"), 24, 4, 16, 80.0, "Ampere", 1008),
    # Laptops, TPU boost (reference): RTX 3050 Laptop 16 SM @ 1500 = 12.3, 4 GB, 192 GB/s; 3050 Ti Laptop
    # 20 @ 1485 = 15.2, 4 GB, 192; 3060 Laptop 30 @ 1425 = 21.9, 6 GB, 336; 3070 Laptop 40 @ 1290 = 26.4,
    # 8 GB, 448; 3070 Ti Laptop 46 @ 1410 = 33.2, 8 GB, 448; 3080 Laptop 48 @ 1245 = 30.6, 8/16 GB, 448;
    # 3080 Ti Laptop 58 @ 1260 = 37.4, 16 GB, 512. GA107 laptops PCIe 4.0 x8, GA106/GA104 x16.
    _laptop("RTX 3050 Laptop", (), 4, 4, 8, 12.3, "Ampere", 192),
    _laptop("RTX 3050 Ti Laptop", (), 4, 4, 8, 15.2, "Ampere", 192),
    _laptop("RTX 3060 Laptop", (), 6, 4, 16, 21.9, "Ampere", 336),
    _laptop("RTX 3070 Laptop", (), 8, 4, 16, 26.4, "Ampere", 448),
    _laptop("RTX 3070 Ti Laptop", (), 8, 4, 16, 33.2, "Ampere", 448),
    _laptop("RTX 3080 Laptop", ("RTX 3080 Laptop 8GB",), 8, 4, 16, 30.6, "Ampere", 448),
    _laptop("RTX 3080 Laptop 16GB", (), 16, 4, 16, 30.6, "Ampere", 448),
    _laptop("RTX 3080 Ti Laptop", (), 16, 4, 16, 37.4, "Ampere", 512),
    # Workstation Ampere (full-rate FP32 acc = the datasheet's sparse "Tensor Performance" / 2):
    # RTX A2000 6/12 GB 63.9 -> 32.0, 288 GB/s; RTX A4000 16 GB 153.4 -> 76.7, 448 GB/s; RTX A4500 20 GB
    # 189.2 -> 94.6, 640 GB/s; RTX A5000 24 GB 222.2 -> 111.1, 768 GB/s. NVIDIA datasheets. PCIe 4.0 x16.
    _c("RTX A2000", ("A2000", "NVIDIA RTX A2000"), 6, 4, 16, 32.0, "Ampere", 288, form="workstation"),
    _c("RTX A2000 12GB", ("A2000 12GB", "NVIDIA RTX A2000 12GB"), 12, 4, 16, 32.0, "Ampere", 288, form="workstation"),
    _c("RTX A4000", ("A4000", "NVIDIA RTX A4000"), 16, 4, 16, 76.7, "Ampere", 448, form="workstation"),
    _c("RTX A4500", ("A4500", "NVIDIA RTX A4500"), 20, 4, 16, 94.6, "Ampere", 640, form="workstation"),
    _c("RTX A5000", ("A5000", "NVIDIA RTX A5000"), 24, 4, 16, 111.1, "Ampere", 768, form="workstation"),
    # RTX A6000 (pro GA102, full-rate FP32 acc): 154.8 = 309.7 sparse / 2, NVIDIA
    # RTX A6000 datasheet "Tensor Performance"; = 84 SM * 1024 * 1.800 GHz; 768 GB/s. PCIe 4.0 x16.
    _c("RTX A6000", ("A6000", "NVIDIA RTX A6000"), 48, 4, 16, 154.8, "Ampere", 768, form="workstation"),
    # A10 24 GB: 125 dense (250 sparse), 600 GB/s, PCIe 4.0 x16. NVIDIA A10 datasheet.
    _c("A10", ("NVIDIA A10", "A10 24GB"), 24, 4, 16, 125.0, "Ampere", 600, form="datacenter"),
    # A100 40GB / 80GB: 312 dense FP16 and BF16 tensor (624 sparse). [A100] Table 1; 1555 / 2039 GB/s.
    # These are the SXM4 figures; the PCIe cards list the same peak but sustain less
    # at 250-300 W. Host link is PCIe 4.0 x16 on both SXM4 and PCIe boards.
    _c("A100 40GB", ("A100", "A100-SXM4-40GB", "A100-PCIE-40GB", "A100 PCIe 40GB", "A100 SXM4 40GB"),
       40, 4, 16, 312.0, "Ampere", 1555, form="datacenter"),
    _c("A100 80GB", ("A100-SXM4-80GB", "A100 80GB PCIe", "A100-PCIE-80GB", "A100 SXM4 80GB"),
       80, 4, 16, 312.0, "Ampere", 2039, form="datacenter"),

    # ---------------------------------------------------------------- Ada RTX 40
    # RTX 4060: 24 SM * 512 * 2.460 GHz = 30.2 (242 AI TOPS / 8); 272 GB/s. PCIe 4.0 *x8*. [TPU "GeForce RTX 4060"]
    _c("RTX 4060", ("4060", "GeForce RTX 4060"), 8, 4, 8, 30.2, "Ada", 272),
    # RTX 4060 Ti 8GB / 16GB (same AD106 config): 34 SM * 512 * 2.535 GHz = 44.1
    # (353 AI TOPS / 8); 288 GB/s. PCIe 4.0 *x8* (TechPowerUp RTX 5060 Ti x8-scaling review
    # recaps the AD106 x8 link). [TPU "GeForce RTX 4060 Ti 8 GB" / "... 16 GB"]
    _c("RTX 4060 Ti 8GB", ("RTX 4060 Ti", "4060 Ti", "4060Ti", "GeForce RTX 4060 Ti"), 8, 4, 8, 44.1, "Ada", 288),
    _c("RTX 4060 Ti 16GB", ("4060 Ti 16GB", "4060Ti 16GB", "GeForce RTX 4060 Ti 16GB"), 16, 4, 8, 44.1, "Ada", 288),
    # RTX 4070: 46 SM * 512 * 2.475 GHz = 58.3 (466 AI TOPS / 8); 504 GB/s. PCIe 4.0 x16. [TPU "GeForce RTX 4070"]
    _c("RTX 4070", ("4070", "GeForce RTX 4070"), 12, 4, 16, 58.3, "Ada", 504),
    # RTX 4070 SUPER: 56 SM * 512 * 2.475 = 71.0 (568 AI TOPS / 8); 504 GB/s. [TPU] [NV]
    _c("RTX 4070 Super", ("4070 Super", "4070S", "GeForce RTX 4070 SUPER"), 12, 4, 16, 71.0, "Ada", 504),
    # RTX 4070 Ti: 60 SM * 512 * 2.610 = 80.2 (641 AI TOPS / 8); 504 GB/s. [TPU] [NV]
    _c("RTX 4070 Ti", ("4070 Ti", "4070Ti", "GeForce RTX 4070 Ti"), 12, 4, 16, 80.2, "Ada", 504),
    # RTX 4070 Ti SUPER (AD103): 66 SM * 512 * 2.610 GHz = 88.2 (706 AI TOPS / 8); 672 GB/s.
    # PCIe 4.0 x16. [TPU "GeForce RTX 4070 Ti SUPER"]
    _c("RTX 4070 Ti Super", ("4070 Ti Super", "4070 Ti S", "4070TiS", "GeForce RTX 4070 Ti SUPER"),
       16, 4, 16, 88.2, "Ada", 672),
    # RTX 4080 16GB: 97.5; 716.8 GB/s. [AD] Appendix A, RTX 4080 16GB table. PCIe 4.0 x16.
    _c("RTX 4080", ("4080", "GeForce RTX 4080", "RTX 4080 16GB"), 16, 4, 16, 97.5, "Ada", 716.8),
    # RTX 4080 SUPER: 80 SM * 512 * 2.550 = 104.4 (836 AI TOPS / 8); 736 GB/s. [TPU] [NV]
    _c("RTX 4080 Super", ("4080 Super", "4080S", "GeForce RTX 4080 SUPER"), 16, 4, 16, 104.4, "Ada", 736),
    # RTX 4090: 165.2; 1008 GB/s. [AD] Appendix A, RTX 4090 table. PCIe 4.0 x16.
    _c("RTX 4090", ("4090", "GeForce RTX 4090"), 24, 4, 16, 165.2, "Ada", 1008),
    # Laptops, NVIDIA's AI TOPS / 8 (top of the TGP range) [NV]: RTX 4050 Laptop 194 -> 24.3, 6 GB, 192 GB/s;
    # 4060 Laptop 233 -> 29.1, 8 GB, 256; 4070 Laptop 321 -> 40.1, 8 GB, 256; 4080 Laptop 542 -> 67.8, 12 GB,
    # 432; 4090 Laptop 686 -> 85.8, 16 GB, 576. AD107/AD106 laptops PCIe 4.0 x8, AD104/AD103 x16. [TPU]
    _laptop("RTX 4050 Laptop", (), 6, 4, 8, 24.3, "Ada", 192),
    _laptop("RTX 4060 Laptop", (), 8, 4, 8, 29.1, "Ada", 256),
    _laptop("RTX 4070 Laptop", (), 8, 4, 8, 40.1, "Ada", 256),
    _laptop("RTX 4080 Laptop", (), 12, 4, 16, 67.8, "Ada", 432),
    _laptop("RTX 4090 Laptop", (), 16, 4, 16, 85.8, "Ada", 576),
    # Workstation Ada (full-rate FP32 acc = datasheet FP8-sparse "Tensor Performance" / 4): RTX 2000 Ada
    # 16 GB 191.9 -> 48.0, 224 GB/s, PCIe 4.0 x8; RTX 4000 SFF Ada 20 GB 306.8 -> 76.7, 280 GB/s; RTX 4000
    # Ada 20 GB 426.6 -> 106.7, 360 GB/s; RTX 4500 Ada 24 GB 634 -> 158.5, 432 GB/s; RTX 5000 Ada 32 GB
    # 1044.4 -> 261.1, 576 GB/s. NVIDIA datasheets. PCIe 4.0 x16 unless said.
    _c("RTX 2000 Ada", ("2000 Ada", "RTX 2000 Ada Generation", "NVIDIA RTX 2000 Ada Generation"),
       16, 4, 8, 48.0, "Ada", 224, form="workstation"),
    _c("RTX 4000 SFF Ada", ("4000 SFF Ada", "RTX 4000 SFF Ada Generation", "NVIDIA RTX 4000 SFF Ada Generation"),
       20, 4, 16, 76.7, "Ada", 280, form="workstation"),
    _c("RTX 4000 Ada", ("4000 Ada", "RTX 4000 Ada Generation", "NVIDIA RTX 4000 Ada Generation"),
       20, 4, 16, 106.7, "Ada", 360, form="workstation"),
    _c("RTX 4500 Ada", ("4500 Ada", "RTX 4500 Ada Generation", "NVIDIA RTX 4500 Ada Generation"),
       24, 4, 16, 158.5, "Ada", 432, form="workstation"),
    _c("RTX 5000 Ada", ("5000 Ada", "RTX 5000 Ada Generation", "NVIDIA RTX 5000 Ada Generation"),
       32, 4, 16, 261.1, "Ada", 576, form="workstation"),
    # RTX 6000 Ada (pro AD102, full-rate FP32 acc): 142 SM * 1024 * 2.505 GHz = 364.2
    # (= datasheet "Tensor Performance" 1,457 FP8-sparse / 4); 960 GB/s. PCIe 4.0 x16.
    # NVIDIA RTX 6000 Ada Generation datasheet.
    _c("RTX 6000 Ada", ("6000 Ada", "RTX 6000 Ada Generation", "NVIDIA RTX 6000 Ada Generation"),
       48, 4, 16, 364.2, "Ada", 960, form="workstation"),
    # L4 24 GB: 121 dense (242 sparse), 300 GB/s, PCIe 4.0 x16. NVIDIA L4 datasheet.
    _c("L4", ("NVIDIA L4",), 24, 4, 16, 121.0, "Ada", 300, form="datacenter"),
    # L40S: 362.05 dense FP16/BF16 tensor (733 sparse); 864 GB/s. NVIDIA L40S datasheet. PCIe 4.0 x16.
    _c("L40S", ("NVIDIA L40S",), 48, 4, 16, 362.05, "Ada", 864, form="datacenter"),
    # T4 16 GB (Turing, full-rate): 65 FP16 mixed precision, 320 GB/s, PCIe 3.0 x16. NVIDIA T4 datasheet.
    _c("T4", ("Tesla T4", "NVIDIA T4"), 16, 3, 16, 65.0, "Turing", 320, form="datacenter"),

    # ---------------------------------------------------------------- Blackwell RTX 50 (GeForce, sm_120)
    # RTX 5050: 20 SM * 512 * 2.572 = 26.3 (421 AI TOPS / 16); 8 GB; 320 GB/s; PCIe 5.0 x8. [TPU] [NV]
    _c("RTX 5050", ("5050", "GeForce RTX 5050"), 8, 5, 8, 26.3, "Blackwell", 320),
    # RTX 5060: 30 SM * 512 * 2.497 = 38.4 (614 AI TOPS / 16); 8 GB; 448 GB/s; PCIe 5.0 x8. [TPU] [NV]
    _c("RTX 5060", ("5060", "GeForce RTX 5060"), 8, 5, 8, 38.4, "Blackwell", 448),
    # RTX 5060 Ti 16GB: 36 SM * 512 * 2.572 GHz = 47.4 (759 AI TOPS / 16; a cuBLAS
    # run measured 47.0 FP32-acc vs 87.9 FP16-acc, github.com/QuantumDrizzy/BLACKWALL); 448 GB/s.
    # PCIe 5.0 *x8* (TechPowerUp "RTX 5060 Ti PCI-Express x8 Scaling"). [TPU]
    _c("RTX 5060 Ti", ("5060 Ti", "5060Ti", "GeForce RTX 5060 Ti", "RTX 5060 Ti 16GB"), 16, 5, 8, 47.4, "Blackwell", 448),
    _c("RTX 5060 Ti 8GB", ("5060 Ti 8GB", "GeForce RTX 5060 Ti 8GB"), 8, 5, 8, 47.4, "Blackwell", 448),
    # RTX 5070: 48 SM * 512 * 2.512 GHz = 61.7 (988 AI TOPS / 16); 672 GB/s. [GB] Appendix A. PCIe 5.0 x16.
    _c("RTX 5070", ("5070", "GeForce RTX 5070"), 12, 5, 16, 61.7, "Blackwell", 672),
    # RTX 5070 Ti: 70 SM * 512 * 2.452 = 87.9 (1406 AI TOPS / 16); 16 GB; 896 GB/s. [GB] Appendix A. PCIe 5.0 x16.
    _c("RTX 5070 Ti", ("5070 Ti", "5070Ti", "GeForce RTX 5070 Ti"), 16, 5, 16, 87.9, "Blackwell", 896),
    # RTX 5080: 84 SM * 512 * 2.617 GHz = 112.6 (1801 AI TOPS / 16); 960 GB/s. [GB] Appendix A. PCIe 5.0 x16.
    _c("RTX 5080", ("5080", "GeForce RTX 5080"), 16, 5, 16, 112.6, "Blackwell", 960),
    # RTX 5090: 170 SM * 512 * 2.407 GHz = 209.5 (838 sparse FP16-acc / 4;
    # 3352 AI TOPS / 16); 1792 GB/s. [GB] Appendix A. PCIe 5.0 x16.
    _c("RTX 5090", ("5090", "GeForce RTX 5090"), 32, 5, 16, 209.5, "Blackwell", 1792),
    # Laptops, NVIDIA's AI TOPS / 16 (top of the TGP range) [NV]: RTX 5050 Laptop 440 -> 27.5, 8 GB, 384 GB/s;
    # 5060 Laptop 572 -> 35.8, 8 GB, 384; 5070 Laptop 798 -> 49.9, 8 GB, 384; 5070 Ti Laptop 992 -> 62.0, 12 GB,
    # 576; 5080 Laptop 1334 -> 83.4, 16 GB, 896; 5090 Laptop 1824 -> 114.0, 24 GB, 896. GB206/GB207 PCIe 5.0 x8,
    # GB205/GB203 x16.
    _laptop("RTX 5050 Laptop", (), 8, 5, 8, 27.5, "Blackwell", 384),
    _laptop("RTX 5060 Laptop", (), 8, 5, 8, 35.8, "Blackwell", 384),
    _laptop("RTX 5070 Laptop", (), 8, 5, 8, 49.9, "Blackwell", 384),
    _laptop("RTX 5070 Ti Laptop", (), 12, 5, 16, 62.0, "Blackwell", 576),
    _laptop("RTX 5080 Laptop", (), 16, 5, 16, 83.4, "Blackwell", 896),
    _laptop("RTX 5090 Laptop", (), 24, 5, 16, 114.0, "Blackwell", 896),
    # RTX PRO 6000 Blackwell (pro GB202, full-rate FP32 acc): 188 SM * 1024 * 2.617 GHz = 503.8
    # (4000 AI TOPS FP4-sparse / 8); 96 GB; 1792 GB/s; PCIe 5.0 x16. NVIDIA RTX PRO 6000 datasheet.
    _c("RTX PRO 6000 Blackwell", ("RTX PRO 6000", "NVIDIA RTX PRO 6000 Blackwell Workstation Edition",
                                  "RTX PRO 6000 Blackwell Workstation Edition"),
       96, 5, 16, 503.8, "Blackwell", 1792, form="workstation"),

    # ---------------------------------------------------------------- Hopper
    # H100 PCIe 80GB: 756.5 dense FP16/BF16 (1,513 sparse / 2); 2000 GB/s. [H] H100 datasheet,
    # "H100 PCIe" column. PCIe 5.0 x16.
    _c("H100 PCIe", ("H100", "H100 80GB", "H100 PCIe 80GB", "NVIDIA H100 PCIe"), 80, 5, 16, 756.5, "Hopper", 2000,
       form="datacenter"),
    # H100 SXM5 80GB (extra row so torch's "NVIDIA H100 80GB HBM3" resolves):
    # 989.4 dense (1,979 sparse / 2); 3350 GB/s. [H] H100 datasheet, "H100 SXM" column.
    # Host link PCIe 5.0 x16.
    _c("H100 SXM", ("H100 SXM5", "H100 80GB HBM3", "NVIDIA H100 80GB HBM3", "H100-SXM5-80GB"),
       80, 5, 16, 989.4, "Hopper", 3350, form="datacenter"),
    # H200 141GB: SXM figure, 989.4 dense (1,979 sparse / 2); 4800 GB/s; the H200 NVL (PCIe)
    # is 835.5. [H] H200 datasheet. Host link PCIe 5.0 x16. nvidia-smi reports
    # ~140 GiB usable (143771 MiB).
    _c("H200", ("H200 141GB", "H200 SXM", "NVIDIA H200"), 141, 5, 16, 989.4, "Hopper", 4800, form="datacenter"),

    # ---------------------------------------------------------------- AMD (PyTorch on ROCm) [AMD]
    # "Peak Half Precision Compute" (WMMA): RX 7600 8 GB 43.5, 288 GB/s, PCIe 4.0 x8; RX 7600 XT 16 GB 45.1,
    # 288, x8; RX 7700 XT 12 GB 70.3, 432; RX 7800 XT 16 GB 74.6, 624; RX 7900 GRE 16 GB 92.0, 576;
    # RX 7900 XT 20 GB 103.0, 800; RX 7900 XTX 24 GB 122.8, 960; Radeon PRO W7900 48 GB 122.6, 864.
    # RDNA4: RX 9070 16 GB 144.5 (289 sparse matrix / 2), 640 GB/s; RX 9070 XT 16 GB 194.7 (389 / 2), 640;
    # PCIe 5.0 x16. RDNA3 desktops PCIe 4.0 x16 unless said.
    _amd("RX 7600", ("7600",), 8, 4, 8, 43.5, "RDNA3", 288),
    _amd("RX 7600 XT", ("7600 XT",), 16, 4, 8, 45.1, "RDNA3", 288),
    _amd("RX 7700 XT", ("7700 XT",), 12, 4, 16, 70.3, "RDNA3", 432),
    _amd("RX 7800 XT", ("7800 XT",), 16, 4, 16, 74.6, "RDNA3", 624),
    _amd("RX 7900 GRE", ("7900 GRE",), 16, 4, 16, 92.0, "RDNA3", 576),
    _amd("RX 7900 XT", ("7900 XT",), 20, 4, 16, 103.0, "RDNA3", 800),
    _amd("RX 7900 XTX", ("7900 XTX",), 24, 4, 16, 122.8, "RDNA3", 960),
    _amd("Radeon PRO W7900", ("W7900", "AMD Radeon PRO W7900"), 48, 4, 16, 122.6, "RDNA3", 864, form="workstation"),
    _amd("RX 9070", ("9070",), 16, 5, 16, 144.5, "RDNA4", 640),
    _amd("RX 9070 XT", ("9070 XT",), 16, 5, 16, 194.7, "RDNA4", 640),

    # ---------------------------------------------------------------- Apple M-series (PyTorch MPS) [APL]
    # Unified memory: (smallest memory sold, GPU FP32 = fp16 TFLOP/s, memory bandwidth GB/s).
    # M1 8-core 8 GB 2.6, 68.25; M1 Pro 16-core 16 GB 5.2, 200; M1 Max 32-core 32 GB 10.4, 400; M1 Ultra
    # 64-core 64 GB 21.0, 800; M2 10-core 8 GB 3.6, 100; M2 Pro 19-core 16 GB 6.8, 200; M2 Max 38-core 32 GB
    # 13.6, 400; M2 Ultra 76-core 64 GB 27.2, 800; M3 10-core 8 GB 4.1, 100; M3 Pro 18-core 18 GB 7.4, 150;
    # M3 Max 40-core 48 GB 16.4, 400; M4 10-core 16 GB 4.3, 120; M4 Pro 20-core 24 GB 9.2, 273; M4 Max
    # 40-core 48 GB 18.4, 546.
    _apple("M1", 8, 2.6, 68.25), _apple("M1 Pro", 16, 5.2, 200), _apple("M1 Max", 32, 10.4, 400),
    _apple("M1 Ultra", 64, 21.0, 800), _apple("M2", 8, 3.6, 100), _apple("M2 Pro", 16, 6.8, 200),
    _apple("M2 Max", 32, 13.6, 400), _apple("M2 Ultra", 64, 27.2, 800), _apple("M3", 8, 4.1, 100),
    _apple("M3 Pro", 18, 7.4, 150), _apple("M3 Max", 48, 16.4, 400), _apple("M4", 16, 4.3, 120),
    _apple("M4 Pro", 24, 9.2, 273), _apple("M4 Max", 48, 18.4, 546),
)


# --------------------------------------------------------------------------- lookup

_DROP_WORDS = re.compile(r"\b(nvidia|geforce|amd|radeon|apple)\b")
_PREFIX = re.compile(r"^(rtx|gtx|rx)")


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


SUGGESTIONS = 3  # nearest names offered for an unknown card
SUGGEST_CUTOFF = 0.6  # difflib similarity below which a name is not offered


def suggest_cards(name: str) -> list[str]:
    """The table's card names nearest to an unknown ``name`` (difflib on the normalised spellings, so
    "rtx 2080 supr" finds "RTX 2080 Super"), for a "did you mean" in the error."""
    k = _norm(name)
    if not k:
        return []
    out: list[str] = []
    for key in difflib.get_close_matches(k, list(_INDEX), n=4 * SUGGESTIONS, cutoff=SUGGEST_CUTOFF):
        if _INDEX[key].name not in out:
            out.append(_INDEX[key].name)
    return out[:SUGGESTIONS]


def unknown_card_message(name: str) -> str:
    """The one sentence for a --gpu name the table lacks: the nearest names, and the way out."""
    near = suggest_cards(name)
    hint = f" (did you mean {' or '.join(repr(n) for n in near)}?)" if near else ""
    return (f"Unknown GPU {name!r}{hint}: see `lowvram gpus` for the table, or describe the card with --vram "
            "and --tflops (e.g. --vram 8GB --tflops 30).")


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
    if card.unified:  # no bus: "host" and "device" memory are the same chips
        return card.mem_gbs * 1e9
    gen = card.pcie_gen if host_pcie_gen is None else min(card.pcie_gen, host_pcie_gen)
    gen = max(3, min(5, gen))
    return _X16_BY_GEN[gen] * card.pcie_lanes / 16


if __name__ == "__main__":
    print(f"{'name':<24} {'arch':<10} {'VRAM':>6} {'PCIe':>7} {'H2D GB/s':>9} "
          f"{'FP16 TF':>8} {'bf16':>5} {'fp8':>4}")
    for c in CARDS:
        print(f"{c.name:<24} {c.arch:<10} {c.vram_gib:>4.0f}GB {f'{c.pcie_gen}.0x{c.pcie_lanes}':>7} "
              f"{pcie_bandwidth_bytes_per_s(c) / 1e9:>9.1f} {c.fp16_tflops:>8.1f} "
              f"{'yes' if c.bf16 else 'no':>5} {'yes' if c.fp8 else 'no':>4}")
    for q in ("rtx 4060", "NVIDIA GeForce RTX 4090", "4060 Ti 16GB", "NVIDIA A100-SXM4-80GB", "gtx1080ti"):
        c = find_card(q)
        assert c is not None, q
        print(f"find_card({q!r}) -> {c.name}")
