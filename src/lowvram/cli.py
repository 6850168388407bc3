"""The `lowvram` command line. It only calls the layers below; bad input exits 2 with one sentence."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import UserError
from .units import format_bytes, format_count

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Plan and run heavy open image models on the GPU you already own.")
out = Console(soft_wrap=True)


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


@app.command()
def models(as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table.")) -> None:
    """List the built-in catalogue of architectures."""
    from .catalogue import MODELS, spec_params

    rows = []
    for m in MODELS.values():
        comps = []
        for c in m.components:
            n = spec_params(c)
            comps.append({"name": c.name, "role": c.role, "class": c.class_name, "title": c.title, "params": n,
                          "bytes_bf16": 2 * n, "config": c.config})
        rows.append({"name": m.name, "family": m.family, "title": m.title, "components": comps,
                     "params": sum(c["params"] for c in comps), "bytes_bf16": sum(c["bytes_bf16"] for c in comps),
                     "default_width": m.width, "default_height": m.height, "default_steps": m.steps,
                     "default_guidance": m.guidance, "uses_cfg": m.uses_cfg, "latent_factor": m.latent_factor,
                     "scheduler": m.scheduler, "hf_repo": m.hf_repo, "signature": m.signature})
    if as_json:
        _print_json(rows)
        return
    t = Table(title="lowvram catalogue")
    for col in ("name", "family", "components", "parameters", "bf16 size"):
        t.add_column(col, justify="right" if col in ("parameters", "bf16 size") else "left")
    for r in rows:
        comps = ", ".join(f"{c['name']} ({format_count(c['params'])})" for c in r["components"])
        t.add_row(r["name"], r["family"], comps, format_count(r["params"]), format_bytes(r["bytes_bf16"]))
    out.print(t)


@app.command()
def inspect(path: str = typer.Argument(..., help="A checkpoint file, a diffusers folder or a folder of component files."),
            as_json: bool = typer.Option(False, "--json", help="Print the documented JSON object.")) -> None:
    """Say what a checkpoint is — architecture, variant, components, dtypes — reading headers only."""
    from .checkpoints.inspect import inspect_path

    rep = inspect_path(path)
    if as_json:
        _print_json(rep.to_json())
        return
    arch = rep.architecture or "component file"
    out.print(f"[bold]{path}[/bold]: {arch} ({rep.variant}), {rep.format} layout")
    t = Table()
    for col in ("component", "role", "kind", "layout", "parameters", "size", "stored as"):
        t.add_column(col)
    for c in rep.components:
        dts = ", ".join(f"{k}×{v}" for k, v in sorted(c.dtypes.items(), key=lambda kv: -kv[1]))
        t.add_row(c.name, c.role, c.kind, c.layout, format_count(c.params), format_bytes(c.bytes), dts)
    out.print(t)
    if rep.missing:
        out.print(f"missing: {', '.join(rep.missing)}")
    if rep.used_by:
        out.print(f"used by: {', '.join(rep.used_by)}")
    for n in rep.notes:
        out.print(f"note: {n}")


def main() -> None:
    """Entry point: run the app; a UserError becomes one sentence on stderr and exit status 2."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notices are not for users
    try:
        app()
    except UserError as e:
        sys.stderr.write(f"lowvram: {e}\n")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("lowvram: interrupted.\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
