"""The streamable units of a module tree: the blocks a planner sizes and a runtime streams.

Streaming moves weights block by block. Top-level children are too coarse for a UNet (one up-block of
SDXL is a quarter of the model) and leaves too fine (thousands of tiny copies). Rule: start from the
top-level children and split any unit bigger than `1/target_units` of the model into its children,
until units are small or leaves. Planner and runtime call the same function, so they agree on units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

TARGET_UNITS = 48  # aim for ~48 units: small enough to prefetch, few enough to keep per-copy overhead low


@dataclass(frozen=True)
class Unit:
    name: str  # dotted module path
    quantizable: int  # elements of Linear weights (may be stored in 8 bits)
    other: int  # elements kept in compute precision (biases, norms, embeddings, convs)
    out_channels: int  # total output channels of the Linear weights (one scale each, per-channel)


def _own_params(m: "torch.nn.Module", pseen: set[int]) -> tuple[int, int, int]:
    """Linear weights may be stored in fp8/int8; biases, norms, embeddings and convs stay."""
    import torch

    q = o = ch = 0
    for name, p in m.named_parameters(recurse=False):
        if id(p) in pseen:  # a tied weight (T5's shared embedding) is stored and moved once
            continue
        pseen.add(id(p))
        if isinstance(m, torch.nn.Linear) and name == "weight":
            q += p.numel()
            ch += p.shape[0]
        elif p.dtype.is_floating_point:
            o += p.numel()
    for b in m.buffers(recurse=False):
        if b.dtype.is_floating_point:
            o += b.numel()
    return q, o, ch


def _holds_tensors(m: "torch.nn.Module", recurse: bool) -> bool:
    return any(True for _ in m.parameters(recurse=recurse)) or any(True for _ in m.buffers(recurse=recurse))


def _subtree(m: "torch.nn.Module", seen: set[int], pseen: set[int]) -> tuple[int, int, int]:
    q = o = ch = 0
    for sub in m.modules():
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        a, b, c = _own_params(sub, pseen)
        q, o, ch = q + a, o + b, ch + c
    return q, o, ch


def streamable_units(module: "torch.nn.Module", target_units: int = TARGET_UNITS) -> list[Unit]:
    """Units in module-creation order; parameters of a parent outside its children form their own unit."""
    import torch

    sizes: dict[int, int] = {}

    def size(m) -> int:  # subtree parameter count, memoised: one pass over the tree in all
        key = id(m)
        if key not in sizes:
            sizes[key] = sum(p.numel() for p in m.parameters(recurse=False)) + sum(size(c) for c in m.children())
        return sizes[key]

    limit = max(1, size(module) // target_units)
    units: list[Unit] = []
    seen: set[int] = set()
    pseen: set[int] = set()

    def visit(m, name: str) -> None:
        children = list(m.named_children())
        # a ModuleList/ModuleDict is never called, so hooks on it never fire: always split it
        if (size(m) > limit or isinstance(m, (torch.nn.ModuleList, torch.nn.ModuleDict))) and children:
            q, o, ch = _own_params(m, pseen)
            seen.add(id(m))
            if q + o or _holds_tensors(m, recurse=False):  # integer buffers (CLIP's position_ids) move too
                units.append(Unit(name or "<root>", q, o, ch))
            for cname, c in children:
                if id(c) not in seen:
                    visit(c, f"{name}.{cname}" if name else cname)
        else:
            q, o, ch = _subtree(m, seen, pseen)
            if q + o or _holds_tensors(m, recurse=True):
                units.append(Unit(name or "<root>", q, o, ch))

    visit(module, "")
    return units


def split_parents(names: list[str]) -> set[int]:
    """Indices of the units (by name, as `streamable_units` lists them) that are split parents: the root, or
    a module some other unit lies inside. Such a unit is only its own tensors (its children are units of
    their own); it never runs as one piece, and the runtime keeps it resident."""
    return {i for i, name in enumerate(names) if name == "<root>" or any(n.startswith(name + ".") for n in names)}
