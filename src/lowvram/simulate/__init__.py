"""Peak memory and FLOPs of each component's forward, computed by running the real model code on
fake tensors (no weights, no GPU)."""

from .simulate import SimRequest, SimResult, simulate_component, run_tracked

__all__ = ["SimRequest", "SimResult", "simulate_component", "run_tracked"]
