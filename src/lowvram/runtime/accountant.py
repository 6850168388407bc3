"""Every byte of weights placed on the device goes through the accountant, which enforces the plan.

The plan predicts activations; weights are what the runtime moves, so they are what it can account
exactly: resident weights, buffer pools, quantisation scales. The accountant refuses a placement that
would exceed the budget (a planning bug, not a user error) and records the peak.
"""

from __future__ import annotations

import torch

from ..errors import InternalError


class BudgetExceeded(InternalError):
    """A placement would take the device's weights past the plan's budget."""


class BudgetAccountant:
    def __init__(self, budget_bytes: int, device: torch.device | str = "cpu") -> None:
        self.budget = int(budget_bytes)
        self.device = torch.device(device)
        self.used = 0
        self.peak = 0
        self.by_owner: dict[str, int] = {}

    def reserve(self, nbytes: int, owner: str) -> None:
        if self.used + nbytes > self.budget:
            raise BudgetExceeded(
                f"{owner} needs {nbytes} bytes on {self.device} but only {self.budget - self.used} of the "
                f"{self.budget}-byte weight budget are left")
        self.used += nbytes
        self.by_owner[owner] = self.by_owner.get(owner, 0) + nbytes
        self.peak = max(self.peak, self.used)

    def release(self, nbytes: int, owner: str) -> None:
        self.used -= nbytes
        self.by_owner[owner] = self.by_owner.get(owner, 0) - nbytes
        if self.by_owner[owner] <= 0:
            self.by_owner.pop(owner)

    def to_device(self, t: torch.Tensor, owner: str, non_blocking: bool = False) -> torch.Tensor:
        """Copy a tensor to the device, charging its bytes first."""
        self.reserve(t.numel() * t.element_size(), owner)
        return t.to(self.device, non_blocking=non_blocking)
