"""The import graph points one way: nothing below imports from above (DESIGN.md).

Read from the source (no import needed): every `from .x import` / `from ..x import` between the package's
top-level parts, checked against the layer order below. A new module must be given a layer here.
"""

import ast
import os

import lowvram

ROOT = os.path.dirname(lowvram.__file__)
# bottom first; a part may import only parts of its own layer or below
LAYERS = [
    {"errors", "units", "regular_file", "jsonfile", "atomic_files", "display", "hub_http", "contract", "kernels",
     "structure", "machines", "hub_progress"},
    {"cache"},
    {"catalogue"},
    {"checkpoints"},
    {"hub", "simulate"},
    {"plan"},
    {"pull_order"},  # what a pull fetches for this machine: the hub's files chosen by the planner
    {"runtime"},
    {"generate"},
    {"server", "ship", "guide"},
    {"batch", "docs"},
    {"cluster"},
    {"cli"},
]
LAYER = {part: i for i, layer in enumerate(LAYERS) for part in layer}


def _imports():
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, ROOT)
            parts = rel[:-3].split(os.sep)
            package = parts[:-1]  # the package this module is in, relative to lowvram
            for node in ast.walk(ast.parse(open(path).read())):
                if isinstance(node, ast.ImportFrom) and node.level:
                    base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                    target = base + (node.module.split(".") if node.module else [])
                    if target:
                        yield rel, parts[0].removesuffix(".py") if len(parts) > 1 else parts[0], target[0]


def test_every_part_has_a_layer():
    tops = {p.removesuffix(".py") for p in os.listdir(ROOT) if (p.endswith(".py") or os.path.isdir(os.path.join(ROOT, p)))
            and not p.startswith("__") and p != "configs"}
    tops.discard("__init__")
    assert tops - set(LAYER) == set(), "give these a layer in tests/test_layers.py"


def test_no_import_points_up():
    up = [(rel, src, dst) for rel, src, dst in _imports()
          if src != dst and dst in LAYER and src in LAYER and LAYER[dst] > LAYER[src]]
    assert up == [], "\n".join(f"{rel}: {src} (layer {LAYER[src]}) imports {dst} (layer {LAYER[dst]})" for rel, src, dst in up)
