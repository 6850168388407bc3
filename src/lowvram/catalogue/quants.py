"""Published GGUF quantisations of a catalogue model: which repo, which file names, how many bits.

`lowvram pull --gguf` plans each quant from these numbers alone (no download) and fetches one file.
A quant's name is llama.cpp's file type ("Q4_K_S"); its weights are stored in one ggml tensor type
("Q4_K"), whose block layout fixes the bits per weight: Q4_K packs 256 weights in 144 bytes = 4.5 bits.
Real files are ~2 % larger (biases, norms and the small input/output layers stay F32/F16).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Quant:
    name: str  # the file's quantisation as published: "Q4_K_S"
    tensor_type: str  # the ggml type its quantised weights are stored in: "Q4_K"
    bits_per_weight: float  # of that type: block bytes x 8 / block weights


# ggml block sizes (weights, bytes): Q8_0 32/34, Q6_K 256/210, Q5_1 32/24, Q5_K 256/176, Q5_0 32/22,
# Q4_1 32/20, Q4_K 256/144, Q4_0 32/18, Q3_K 256/110, Q2_K 256/84 (gguf.GGML_QUANT_SIZES).
QUANTS: dict[str, Quant] = {q.name: q for q in (
    Quant("Q8_0", "Q8_0", 8.5),
    Quant("Q6_K", "Q6_K", 6.5625),
    Quant("Q5_1", "Q5_1", 6.0),
    Quant("Q5_K_S", "Q5_K", 5.5),
    Quant("Q5_0", "Q5_0", 5.5),
    Quant("Q4_1", "Q4_1", 5.0),
    Quant("Q4_K_S", "Q4_K", 4.5),
    Quant("Q4_0", "Q4_0", 4.5),
    Quant("Q3_K_S", "Q3_K", 3.4375),
    Quant("Q2_K", "Q2_K", 2.625),
)}
# Best quality first: more bits per weight; at equal bits a K-quant (256-weight super-blocks with
# quantised per-32 scales) keeps more than a legacy 32-weight block — the order of QUANTS above.
QUALITY_ORDER = tuple(QUANTS)


@dataclass(frozen=True)
class GgufRepo:
    """A hub repo of GGUF files of one model's denoiser, one file per quant."""

    repo: str  # "city96/FLUX.1-dev-gguf"
    file_pattern: str  # "flux1-dev-{quant}.gguf"
    quants: tuple[str, ...]  # the published quants, names from QUANTS
    component: str = "transformer"  # the pipeline component the file replaces

    def __post_init__(self) -> None:
        unknown = [q for q in self.quants if q not in QUANTS]
        if unknown:
            raise ValueError(f"unknown quant(s) {unknown} for {self.repo}")

    def filename(self, quant: str) -> str:
        return self.file_pattern.format(quant=quant)

    def best_first(self) -> tuple[Quant, ...]:
        return tuple(QUANTS[q] for q in QUALITY_ORDER if q in self.quants)

    def quant_of(self, filename: str) -> Quant | None:
        """The quant a file of this repo holds, by its published name; None for other files."""
        for q in self.quants:
            if filename == self.filename(q):
                return QUANTS[q]
        return None
