"""What a pull fetches, decided before a byte moves: the weights (the full ones or a GGUF quant, chosen
by planning in plan/weights_choice.py) and the snapshot downloads that bring them (hub.py).

`lowvram pull` and the server's pulls from the page (server/pulls.py) both start here, so the page
pulls exactly what the same command would.
"""

from __future__ import annotations

from dataclasses import dataclass

from .catalogue import ModelSpec
from .hub import Fetch, fetches
from .plan.weights_choice import WeightsChoice, choose_weights

# The policy a pull plans under when the user names none: the page's pull button (and `lowvram pull
# --quality balanced`) fetches a GGUF quant only when the full weights do not fit this machine well.
PAGE_POLICY = "balanced"


def pull_policy(quality: str | None, gguf: str | None) -> str:
    """`lowvram pull`'s policy: the one asked for, else balanced with --gguf (quants are lossy), else lossless."""
    return quality or ("balanced" if gguf else "lossless")


@dataclass(frozen=True)
class PullOrder:
    spec: ModelSpec
    policy: str
    choice: WeightsChoice
    fetches: tuple[Fetch, ...]

    @property
    def weights(self) -> str:
        """"GGUF Q4_K_S" or "full weights": what the pull brings, in the words `lowvram list` uses."""
        return f"GGUF {self.choice.quant.name}" if self.choice.quant else "full weights"

    def command(self, gguf: str | None = None) -> str:
        """The `lowvram pull` command that fetches the same."""
        parts = ["lowvram pull", self.spec.name]
        if gguf:
            parts.append(f"--gguf {gguf}")
        if self.policy != pull_policy(None, gguf) and self.spec.gguf is not None:  # without quants it changes nothing
            parts.append(f"--quality {self.policy}")
        return " ".join(parts)


def order_pull(spec: ModelSpec, policy: str, gguf: str | None, machine, variant: str | None = None) -> PullOrder:
    """The weights to pull for `machine` (None only when nothing needs planning) and their downloads."""
    choice = choose_weights(spec, policy, gguf, machine)
    return PullOrder(spec, policy, choice, tuple(fetches(spec, variant, choice.quant)))
