"""Peak memory and FLOPs of each component's forward, computed by running the real model code on
fake tensors (no weights, no GPU). `simulate_component` answers from the disk cache without torch."""

from .api import SimRequest, SimResult, simulate_component

__all__ = ["SimRequest", "SimResult", "simulate_component", "run_tracked"]


def __getattr__(name):  # the torch-heavy runner loads on first use only
    if name == "run_tracked":
        from .run import run_tracked

        return run_tracked
    raise AttributeError(name)
