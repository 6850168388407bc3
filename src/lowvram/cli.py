"""The `lowvram` command line. It only calls the layers below; bad input exits 2 with one sentence."""

from __future__ import annotations

import json
import os
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import InternalError, UserError
from .units import format_bytes, format_count

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Plan and run heavy open image models on the GPU you already own.")
out = Console(soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        sys.stdout.write(f"lowvram {__version__}\n")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print lowvram's version and exit.")) -> None:
    """Plan and run heavy open image models on the GPU you already own."""


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
                     "scheduler": m.scheduler, "hf_repo": m.hf_repo, "signature": m.signature,
                     "gguf": None if m.gguf is None else {"repo": m.gguf.repo, "component": m.gguf.component,
                                                          "quants": {q.name: {"file": m.gguf.filename(q.name),
                                                                              "bits_per_weight": q.bits_per_weight}
                                                                     for q in m.gguf.best_first()}}})
    if as_json:
        _print_json(rows)
        return
    from .display import fit_table

    table = []
    for r in rows:
        comps = ", ".join(f"{c['name']} {format_count(c['params'])}" for c in r["components"])
        table.append((r["name"], r["family"], comps, format_count(r["params"]), format_bytes(r["bytes_bf16"])))
    fit_table(out, [("name", "left"), ("family", "left"), ("components", "left"), ("params", "right"), ("bf16", "right")],
              table, title="lowvram catalogue")


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
    from .display import fit_table

    out.print(f"[bold]{path}[/bold]: {arch} ({rep.variant}), {rep.format} layout", soft_wrap=False)
    rows = []
    for c in rep.components:
        dts = ", ".join(f"{k}×{v}" for k, v in sorted(c.dtypes.items(), key=lambda kv: -kv[1]))
        rows.append((c.name, c.role, c.kind, c.layout, format_count(c.params), format_bytes(c.bytes), dts))
    fit_table(out, [("component", "left"), ("role", "left"), ("kind", "left"), ("layout", "left"), ("params", "right"),
                    ("size", "right"), ("stored as", "left")], rows)
    if rep.missing:
        out.print(f"missing: {', '.join(rep.missing)}", soft_wrap=False)
    if rep.used_by:
        out.print(f"used by: {', '.join(rep.used_by)}", soft_wrap=False)
    for n in rep.notes:
        out.print(f"note: {n}", soft_wrap=False)


def _model_spec(model: str):
    """(catalogue spec, GGUF file weights) for a catalogue name or a checkpoint path (headers only)."""
    from .catalogue import get_model

    if os.path.exists(model) or os.sep in model or model.endswith((".safetensors", ".gguf", ".sft", ".ckpt")):
        from .catalogue import MODELS
        from .catalogue.folder import folder_spec
        from .checkpoints.inspect import inspect_path

        rep = inspect_path(model)
        if rep.architecture is None:
            raise UserError(f"{model} is a lone {rep.variant}, not a whole model: plan the model it belongs to ({', '.join(rep.used_by)}).")
        return folder_spec(MODELS[rep.architecture], rep), rep.file_weights()
    return get_model(model), {}


@app.command()
def plan(model: str = typer.Argument(..., help="Catalogue name (see `lowvram models`) or checkpoint path."),
         width: Optional[int] = typer.Option(None, help="Image width in pixels (default: the model's)."),
         height: Optional[int] = typer.Option(None, help="Image height in pixels (default: the model's)."),
         batch: int = typer.Option(1, help="Images per batch."),
         steps: Optional[int] = typer.Option(None, help="Denoising steps (default: the model's)."),
         no_guidance: bool = typer.Option(False, "--no-guidance", help="Classifier-free guidance off."),
         lora: list[str] = typer.Option([], "--lora", help="A LoRA file (repeatable): its factors' bytes are planned."),
         loras: int = typer.Option(0, help="Number of LoRAs, when planning without their files (200 MiB each assumed)."),
         controlnet: Optional[str] = typer.Option(None, "--controlnet", help="[PATH] A diffusers ControlNet folder; "
                                                  "bare: the model's published ControlNet."),
         img2img: bool = typer.Option(False, help="img2img / inpaint (adds a VAE encode)."),
         gpu: Optional[str] = typer.Option(None, help='Plan for a card from the table, e.g. "RTX 4060".'),
         vram: Optional[str] = typer.Option(None, help="VRAM, e.g. 8GB."),
         ram: Optional[str] = typer.Option(None, help="System RAM, e.g. 16GB."),
         link_gbps: Optional[float] = typer.Option(None, help="Host-to-GPU bandwidth, GB/s."),
         tflops: Optional[float] = typer.Option(None, help="Dense fp16 tensor TFLOP/s of the card."),
         quality: str = typer.Option("lossless", help="lossless | balanced | fast"),
         reserve: Optional[str] = typer.Option(None, help="VRAM kept free for the CUDA context (default 0.9GB)."),
         step_cache: Optional[float] = typer.Option(None, "--step-cache", help="Lossy, with --quality fast: skip a "
                                                    "step's blocks after the first when the first barely changed "
                                                    "(first-block cache; threshold, e.g. 0.08)."),
         explain: bool = typer.Option(False, "--explain", help="List the rejected alternatives."),
         as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON.")) -> None:
    """Will it fit, how, and how fast: the plan for MODEL on this (or a named) machine."""
    from .plan import Policy, Workload, make_plan
    from .plan.machine import resolve_machine
    from .generate.request import MAX_BATCH, MAX_STEPS
    from .units import check_count, check_resolution, parse_size

    _check_quality(quality)
    _check_step_cache(step_cache, quality)
    spec, file_weights = _model_spec(model)
    w, h = width or spec.width, height or spec.height
    check_resolution(w, h, spec.latent_factor, spec.name)
    check_count(batch, 1, MAX_BATCH, "--batch", "images")
    n_steps = spec.steps if steps is None else steps
    check_count(n_steps, 1, MAX_STEPS, "--steps", "steps")
    if loras < 0:
        raise UserError(f"--loras {loras} is negative: give the number of LoRAs, 0 or more.")
    if lora and loras:
        raise UserError("Give the LoRA files with --lora, or their number with --loras, not both.")
    from .checkpoints.lora_size import lora_file_bytes

    lora_bytes = tuple(lora_file_bytes(_lora_arg(x)[0]) for x in lora)
    if controlnet not in (None, CONTROLNET_DEFAULT) and not os.path.isdir(controlnet):
        raise UserError(f"The ControlNet folder {controlnet} does not exist: give a diffusers ControlNet folder, "
                        "or --controlnet alone for the model's published one.")
    machine = resolve_machine(gpu, vram, ram, link_gbps, tflops)
    wl = Workload(w, h, batch, n_steps, not no_guidance, loras, controlnet is not None, img2img, lora_bytes,
                  "" if controlnet in (None, CONTROLNET_DEFAULT) else controlnet)
    with _working(f"planning {spec.name} at {w}x{h} (a workload planned for the first time is simulated on fake "
                  "tensors: ~10 s)"):
        p = make_plan(spec, wl, machine, Policy(quality, parse_size(reserve, "reserve") if reserve else 0,
                                                step_cache or 0.0), file_weights=file_weights)
    if as_json:
        _print_json(p.to_json())
        return
    _print_plan(p, explain)
    from .plan.alternatives import alternatives
    from .contract import POLICIES

    # compared on fit and time only: no smallest-machine search for them
    others = [make_plan(spec, wl, machine, Policy(q, p.reserve_bytes), find_smallest=False, file_weights=file_weights)
              for q in POLICIES if q != quality]
    for alt in alternatives(p, others):
        out.print(f"  alternative {alt.line()} (--quality {alt.policy})", markup=False, highlight=False, soft_wrap=False)


def _working(what: str):
    """A spinner on stderr saying what runs, for work that can take seconds (a first simulation); nothing
    when stderr is not a terminal (a log should not fill with spinner frames)."""
    from contextlib import nullcontext

    err = Console(stderr=True)
    return err.status(what) if err.is_terminal else nullcontext()


# typer options cannot take an optional value, so main() gives these options, written bare (last, or
# followed by another option), a value before parsing: `plan MODEL --controlnet` -> `--controlnet default`
# (the model's published ControlNet), `batch JOBS --ray` / `serve --ray` -> `--ray local` (a local cluster).
CONTROLNET_DEFAULT = "default"
RAY_LOCAL = "local"
BARE_OPTIONS = ((("plan",), "--controlnet", CONTROLNET_DEFAULT), (("batch", "serve"), "--ray", RAY_LOCAL))


def _bare_options(argv: list[str]) -> list[str]:
    """argv with a value after each bare option of BARE_OPTIONS its command takes."""
    for commands, option, value in BARE_OPTIONS:
        if argv[:1] and argv[0] in commands:
            given = argv
            argv = []
            for i, a in enumerate(given):
                argv.append(a)
                if a == option and (i + 1 == len(given) or given[i + 1].startswith("-")):
                    argv.append(value)
    return argv


def _print_plan(p, explain: bool) -> None:
    """The plan for people: a header line, a table per component (a list below ~100 columns), the verdict."""
    from .display import fit_table

    m = p.machine
    where = (f"the CPU (no CUDA GPU here: {format_bytes(m.vram_bytes)} of {format_bytes(m.ram_bytes)} RAM for weights and "
             f"activations, {m.tflops:.2f} fp32 TFLOP/s)" if m.device == "cpu" else
             f"{m.name} ({format_bytes(m.vram_bytes)} VRAM, {format_bytes(m.ram_bytes)} RAM, "
             f"{m.link_bytes_per_s / 1e9:.0f} GB/s link, {m.tflops:.0f} TFLOP/s)")
    out.print(f"[bold]{escape(p.model)}[/bold] at {p.workload.width}x{p.workload.height}, batch {p.workload.batch}, "
              f"{p.workload.steps} steps on {escape(where)} — policy {p.policy}", soft_wrap=False)
    rows = []
    for c in p.components:
        place = c.placement if c.placement != "streamed" else f"streamed {c.resident_units}/{c.total_units}"
        rows.append((c.name, format_count(c.params), format_bytes(c.stored_bytes), place, c.precision,
                     format_bytes(c.vram_bytes + c.activation_bytes), c.notes))
    fit_table(out, [("component", "left"), ("params", "right"), ("stored", "right"), ("placement", "left"),
                    ("precision", "left"), ("VRAM", "right"), ("notes", "left")], rows,
              caption="streamed K/N: K of N blocks resident, the rest streamed")
    verdict = "[green]fits[/green]" if p.fits else "[red]does not fit[/red]"
    mem = "peak memory" if m.device == "cpu" else "peak VRAM"
    out.print(f"{verdict}: {mem} {format_bytes(p.peak_vram_bytes)} (incl. {format_bytes(p.reserve_bytes)} reserve), "
              f"peak RAM {format_bytes(p.peak_ram_bytes)}; {p.seconds_per_step:.2f} s/step, {p.seconds_per_image:.1f} s/image",
              soft_wrap=False)
    for d in p.decisions:
        out.print(f"  - {d}", soft_wrap=False)
    if p.lossy_reason:
        out.print(f"  ! {p.lossy_reason}", soft_wrap=False)
    if p.smallest_fitting:
        sf = p.smallest_fitting
        out.print(f"  smallest machine that fits: {format_bytes(sf['vram_bytes'])} VRAM with {format_bytes(sf['ram_bytes'])} RAM",
                  soft_wrap=False)
    if explain and p.rejected:
        # each option once (plan/explain.py deduplicates), with its prediction and why it lost; whole plans
        # the policy set aside (the lossless or 8-bit alternative) last
        rows = []
        for r in p.rejected:
            step = f"{r['seconds_per_step']:.2f}" if "seconds_per_step" in r else "-"
            if "component" in r:
                option = r["option"] + (f", ControlNet {r['controlnet']}" if r.get("controlnet") else "")
                rows.append((r["component"], option, step, f"{r['seconds_per_image']:.2f}", format_bytes(r["vram_bytes"]),
                             format_bytes(r["ram_bytes"]), r["reason"]))
            else:
                rows.append(("(whole plan)", r["alternative"], step, f"{r['seconds_per_image']:.2f}",
                             format_bytes(r["peak_vram_bytes"]), format_bytes(r["peak_ram_bytes"]), r["reason"]))
        fit_table(out, [("component", "left"), ("option", "left"), ("s/step", "right"), ("s/image", "right"),
                        ("peak VRAM", "right"), ("RAM", "right"), ("why it lost", "left")], rows,
                  title="rejected alternatives")


@app.command()
def gpus(tiers: bool = typer.Option(False, "--tiers", help="Rows are VRAM tiers 4/6/8/12/16/24 GB instead of cards."),
         ram: str = typer.Option("32GB", help="System RAM assumed for every row."),
         models_: Optional[str] = typer.Option(None, "--models", help="Comma-separated catalogue names (default: all)."),
         quality: str = typer.Option("balanced", help="lossless | balanced | fast"),
         markdown: bool = typer.Option(False, "--markdown", help="Print a Markdown table for docs.")) -> None:
    """GPU selection guide: for each card (or VRAM tier) and model, the best plan's class and s/step."""
    _check_quality(quality)
    from .catalogue import MODELS, get_model
    from .guide import card_rows, guide_grid, markdown_table, tier_rows
    from .units import parse_size

    ram_bytes = parse_size(ram, "RAM size")
    names = [get_model(n).name for n in models_.split(",")] if models_ else list(MODELS)
    rows = tier_rows(ram_bytes) if tiers else card_rows(ram_bytes)
    table = guide_grid(rows, names, quality)
    header = ["GPU"] + names
    if markdown:
        sys.stdout.write(markdown_table(header, table))
        return
    from .display import split_table

    split_table(out, [(col, "left") for col in header], [[label] + cells for label, cells in table],
                title=f"best plan per card at default resolution ({quality}, {ram} RAM): class, s/step",
                caption="resident: all on the GPU; streamed: blocks streamed; fp8/int8: 8-bit weights")


def _check_step_cache(step_cache: float | None, quality: str) -> None:
    """--step-cache is lossy: a threshold >= 0, and only under --quality fast."""
    if step_cache is None:
        return
    if not (0.0 <= step_cache < float("inf")):
        raise UserError(f"--step-cache {step_cache} is not a threshold: give a number >= 0, e.g. 0.08.")
    if step_cache and quality != "fast":
        raise UserError(f"--step-cache is lossy and needs --quality fast (not {quality}): add --quality fast or drop it.")


def _check_quality(quality: str) -> None:
    from .contract import POLICIES

    if quality not in POLICIES:
        raise UserError(f"Unknown --quality {quality!r}: choose lossless, balanced or fast.")


@app.command()
def generate(prompt: str = typer.Argument(..., help="What to draw."),
             model: str = typer.Option(..., "--model", help="A diffusers folder, a single-file checkpoint, a folder of ComfyUI component files, or DeepFloyd IF's folder of its three stages."),
             models_dir: Optional[str] = typer.Option(None, "--models-dir", help="A ComfyUI or A1111 models/ folder: find the model (by file name) and its text encoders and VAE there."),
             config: Optional[str] = typer.Option(None, "--config", help="For single files: a diffusers folder of the same model with its configs and tokenizers; components the file lacks are loaded from its weights."),
             negative: str = typer.Option("", "--negative", help="Negative prompt (models with CFG)."),
             width: Optional[int] = typer.Option(None, help="Width in pixels (default: the model's)."),
             height: Optional[int] = typer.Option(None, help="Height in pixels (default: the model's)."),
             steps: Optional[int] = typer.Option(None, help="Denoising steps (default: the model's)."),
             guidance: Optional[float] = typer.Option(None, help="Guidance scale (default: the model's)."),
             seed: int = typer.Option(0, help="Random seed: the same seed gives the same image."),
             batch: int = typer.Option(1, help="Images to make."),
             sampler: Optional[str] = typer.Option(None, help='A1111 sampler name ("Euler a", "DPM++ 2M"...) or euler, euler_a, dpm++_2m, ddim, unipc, flow_euler.'),
             schedule: Optional[str] = typer.Option(None, help='A1111 schedule type: Automatic, Karras, Exponential, "SGM Uniform"...'),
             gpu: Optional[str] = typer.Option(None, help='Plan as for this card, e.g. "RTX 4060".'),
             vram: Optional[str] = typer.Option(None, help="VRAM budget, e.g. 8GB."),
             ram: Optional[str] = typer.Option(None, help="RAM budget, e.g. 16GB."),
             quality: str = typer.Option("lossless", help="lossless | balanced | fast"),
             step_cache: Optional[float] = typer.Option(None, "--step-cache", help="Lossy, with --quality fast: skip a "
                                                        "step's blocks after the first when the first barely changed "
                                                        "(first-block cache; threshold, e.g. 0.08)."),
             init_image: Optional[str] = typer.Option(None, "--init-image", help="img2img: start from this image."),
             strength: float = typer.Option(0.75, help="img2img: how much to change the init image (0-1]."),
             mask: Optional[str] = typer.Option(None, "--mask", help="Inpaint: white = repaint (needs --init-image)."),
             lora: list[str] = typer.Option([], "--lora", help="A LoRA file, optionally FILE:WEIGHT (repeatable)."),
             controlnet: Optional[str] = typer.Option(None, "--controlnet", help="A diffusers ControlNet folder."),
             control_image: Optional[str] = typer.Option(None, "--control-image", help="The ControlNet's condition image."),
             output: str = typer.Option("lowvram.png", "-o", "--output", help="PNG to write (numbered for a batch)."),
             quiet: bool = typer.Option(False, "--quiet", help="No progress bar.")) -> None:
    """Make an image: inspect, plan, load under the plan, denoise, write a PNG with A1111 parameters."""
    from .generate.run import GenerateRequest
    from .generate.session import Session, planner_for
    from .plan.machine import resolve_run_machine

    _check_quality(quality)
    _check_step_cache(step_cache, quality)
    from .hub import installed_model

    if not models_dir:  # an installed catalogue name: the weights pulled last (and, for a GGUF, its components)
        pulled = installed_model(model)
        model, config = pulled.path, config or pulled.config
    if not os.path.exists(model) and not models_dir:
        raise UserError(f"{model} does not exist: give a diffusers folder, a checkpoint file or a folder of component files.")
    machine, where = resolve_run_machine(gpu, vram, ram)
    req = GenerateRequest(prompt=prompt, model=model, negative=negative, width=width, height=height, steps=steps,
                          guidance=guidance, seed=seed, batch=batch, sampler=sampler, schedule=schedule, output=output,
                          quiet=quiet, init_image=init_image, strength=strength, mask=mask, config=config,
                          loras=[_lora_arg(x) for x in lora], controlnet=controlnet, control_image=control_image,
                          models_dir=models_dir)
    err = Console(stderr=True, soft_wrap=True)
    session = Session(planner_for(machine, quality, step_cache=step_cache or 0.0), console=None if quiet else err,
                      where=where)
    try:
        res = session.run(req)
    finally:
        session.unload()
    if res.interrupted_at is not None:
        err.print(f"Stopped at step {res.interrupted_at} (Ctrl-C); no image written.")
        raise typer.Exit(130)
    p = res.plan
    for path in res.paths:
        out.print(f"wrote {path}", markup=False, highlight=False)
    if not quiet:
        out.print(f"time {res.run_seconds:.1f} s (predicted {p.seconds_per_image:.1f} s on {p.machine.name}) "
                  f"+ {res.load_seconds:.1f} s loading; "
                  + (f"peak VRAM {format_bytes(res.peak_vram_bytes)} (predicted {format_bytes(p.peak_vram_bytes)}); "
                     if res.device == "cuda" else  # on the CPU the accountant counts the weights it placed
                     f"weights held {format_bytes(res.peak_vram_bytes)} (planned peak memory "
                     f"{format_bytes(p.peak_vram_bytes)}); ")
                  + f"RAM {format_bytes(res.peak_ram_bytes)} (predicted {format_bytes(p.peak_ram_bytes)})")
        if res.step_cache_calls:
            out.print(f"step cache: {res.step_cache_skipped} of {res.step_cache_calls} denoiser calls skipped "
                      f"(planned on an estimated {p.step_cache_skip:.0%})")
        from .generate.request import load_times_line

        line = load_times_line(p, res.component_load_seconds)
        if line:
            out.print(line, markup=False, highlight=False)
        for r in res.replans:
            out.print(f"re-planned: {r}")


@app.command()
def pull(name: str = typer.Argument(..., help="Catalogue name, e.g. flux-schnell."),
         variant: Optional[str] = typer.Option(None, "--variant", help="Weights variant, e.g. fp16."),
         gguf: Optional[str] = typer.Option(None, "--gguf", help="The denoiser as a published GGUF quant: a name "
                                            "(Q8_0, Q4_K_S...) or auto, the highest quality whose plan fits."),
         gpu: Optional[str] = typer.Option(None, help='Plan for a card from the table, e.g. "RTX 4060".'),
         vram: Optional[str] = typer.Option(None, help="VRAM to plan for, e.g. 6GB."),
         ram: Optional[str] = typer.Option(None, help="System RAM to plan for, e.g. 16GB."),
         quality: Optional[str] = typer.Option(None, help="lossless (full weights; the default) | balanced | fast "
                                               "(a GGUF quant when the full weights do not fit well); --gguf implies balanced.")) -> None:
    """Download a catalogue model into the Hugging Face cache: only what the plan needs; resumable."""
    from .catalogue import get_model
    from .hub import download, preview
    from .plan.weights_choice import check_request
    from .pull_order import order_pull, pull_policy

    spec = get_model(name)
    if quality is not None:
        _check_quality(quality)
    policy = pull_policy(quality, gguf)
    check_request(spec, policy, gguf)  # before probing a machine: these need none to be refused
    machine = _pull_machine(spec, policy, gguf, gpu, vram, ram)
    order = order_pull(spec, policy, gguf, machine, variant)
    err = Console(stderr=True, soft_wrap=True)
    _print_choice(err, spec, order.choice, machine, policy)
    todo = list(order.fetches)
    _print_downloads(err, spec, [(f, preview(f)) for f in todo])
    pulled = download(spec, todo)
    out.print(f"{spec.name}: {pulled.path}")
    if pulled.config:
        out.print(f"{spec.name} components: {pulled.config}")


def _pull_machine(spec, policy: str, gguf: Optional[str], gpu, vram, ram):
    """The machine `pull` plans for: with --gguf (auto chooses by it; a named quant is checked against it,
    to warn if it does not fit) and for balanced/fast without --gguf; never for a lossless pull. A machine
    without a GPU is planned as its CPU (plan/machine.py), so there is always one."""
    from .plan.machine import resolve_machine

    if gguf is not None or (policy != "lossless" and spec.gguf is not None):
        return resolve_machine(gpu, vram, ram)
    return None


def _print_choice(err: Console, spec, choice, machine, policy: str) -> None:
    """What `pull` chose and why, with the plans that decided it (nothing for a model without GGUF quants:
    there was no choice)."""
    if spec.gguf is None and choice.plan is None:
        return
    if machine is not None and (choice.plan or choice.tried):
        err.print(f"{spec.name} on {machine.name} ({format_bytes(machine.vram_bytes)} VRAM, {format_bytes(machine.ram_bytes)} "
                  f"RAM), policy {policy}, planned at {spec.width}x{spec.height}, {spec.steps} steps:")
        t = Table()
        for col in ("weights", "bits/weight", "fits", "s/image", "peak VRAM", "peak RAM", spec.by_role("denoiser")[0].name):
            t.add_column(col)
        rows = []
        if choice.full_plan is not None:
            rows.append(("full (lossless)", "16", choice.full_plan))
        rows += [(f"GGUF {t_.quant.name}", f"{t_.quant.bits_per_weight:.3g}", t_.plan) for t_ in choice.tried]
        if not choice.tried and choice.plan is not None and choice.plan is not choice.full_plan:
            label = f"GGUF {choice.quant.name}" if choice.quant else f"full ({policy})"
            rows.append((label, f"{choice.quant.bits_per_weight:.3g}" if choice.quant else "16", choice.plan))
        for label, bits, p in rows:
            den = next((c for c in p.components if c.role == "denoiser"), None)
            where = "-" if den is None else f"{den.placement} {den.precision}" + (" from disk" if den.source == "disk" else "")
            t.add_row(label, bits, "yes" if p.fits else "no", f"{p.seconds_per_image:.1f}", format_bytes(p.peak_vram_bytes),
                      format_bytes(p.peak_ram_bytes), where)
        err.print(t)
    what = f"GGUF {choice.quant.name}" if choice.quant else "full weights"
    err.print(f"chose {what}: {choice.reason}.")
    if choice.warning:
        err.print(f"! {choice.warning}")


def _print_downloads(err: Console, spec, previews) -> None:
    """Sizes, before anything is downloaded."""
    total = todo = 0
    for f, files in previews:
        size = sum(i.size for i in files)
        missing = sum(i.size for i in files if not i.cached)
        total, todo = total + size, todo + missing
        if f.what.startswith("GGUF"):
            err.print(f"  {f.repo}: {files[0].path} ({format_bytes(size)})")
        else:
            note = ""
            if f.what == "components":
                from .catalogue import spec_params

                den = spec.component(spec.gguf.component)
                note = f" — text encoders, VAE, tokenizers, scheduler, configs; not its {den.name} weights " \
                       f"({format_bytes(2 * spec_params(den))} in bf16)"
            err.print(f"  {f.repo}: {len(files)} files ({format_bytes(size)}){note}")
    err.print(f"  {format_bytes(todo)} to download" + (f" ({format_bytes(total - todo)} already in the cache)" if todo < total else ""))


# On Ctrl-C, requests still waiting for images get this long before the running job is interrupted
# and the model unloaded (uvicorn would otherwise wait for them without end).
SHUTDOWN_GRACE_S = 3


@app.command()
def serve(model: Optional[str] = typer.Option(None, "--model", help="A model to offer: a path, or a catalogue name you pulled."),
          models_dir: Optional[str] = typer.Option(None, "--models-dir", help="A ComfyUI or A1111 models/ folder: offer "
                                                   "every model in it (and diffusers folders in its diffusers/)."),
          host: Optional[str] = typer.Option(None, "--host", help="Address to bind (default 127.0.0.1; --listen: all)."),
          port: int = typer.Option(7860, "--port", help="Port (A1111's 7860 by default)."),
          listen: bool = typer.Option(False, "--listen", help="Bind all interfaces: other machines can reach the server."),
          api_auth: Optional[str] = typer.Option(None, "--api-auth", help="USER:PASS[,USER:PASS]: HTTP basic auth on every route."),
          outputs: str = typer.Option("outputs", "--outputs", help="Save images here, as A1111 does (txt2img-images/DATE/)."),
          queue_size: int = typer.Option(16, "--queue-size", help="Requests that may wait; more get 503."),
          gpu: Optional[str] = typer.Option(None, help='Plan as for this card, e.g. "RTX 4060".'),
          vram: Optional[str] = typer.Option(None, help="VRAM budget, e.g. 8GB."),
          ram: Optional[str] = typer.Option(None, help="RAM budget, e.g. 16GB."),
          quality: str = typer.Option("lossless", help="lossless | balanced | fast (a request's default)."),
          ray: Optional[str] = typer.Option(None, "--ray", help="Serve on a Ray cluster, one replica per GPU, each "
                                            "under its own plan: its address, or none for a local one.")) -> None:
    """Serve A1111's HTTP API (and lowvram's) on a model kept loaded between requests."""
    import uvicorn

    from .plan.machine import resolve_run_machine
    from .server.app import create_app
    from .server.auth import parse_credentials
    from .server.config import DEFAULT_HOST, LISTEN_HOST, ServerConfig
    from .server.models import discover

    _check_quality(quality)
    if not 1 <= port <= 65535:
        raise UserError(f"--port {port} is not a port number: give 1 to 65535.")
    if queue_size < 1:
        raise UserError(f"--queue-size {queue_size} must be at least 1.")
    credentials = parse_credentials(api_auth) if api_auth else []
    if outputs and not os.path.isdir(os.path.dirname(os.path.abspath(outputs)) or "."):
        raise UserError(f"The folder holding --outputs {outputs} does not exist: create it or choose another.")
    registry = discover(model, models_dir)
    machine, where = resolve_run_machine(gpu, vram, ram)
    bind = host or (LISTEN_HOST if listen else DEFAULT_HOST)
    config = ServerConfig(registry, machine, quality, queue_size, credentials, outputs)
    err = Console(stderr=True, soft_wrap=True)
    names = ", ".join(registry.models) or "none (give --model or --models-dir)"
    shown = "127.0.0.1" if bind == LISTEN_HOST else bind
    out.print(f"lowvram serving on http://{shown}:{port} (A1111 API at /sdapi/v1, docs at /docs); models: {names}",
              markup=False, highlight=False)
    err.print(where, markup=False, highlight=False)
    if bind == LISTEN_HOST:
        err.print(f"note: listening on all interfaces ({bind}:{port}): other machines on the network can use this server"
                  + ("" if credentials else "; consider --api-auth USER:PASS") + ".", markup=False, highlight=False)
    if ray is not None:
        from .cluster import app as cluster_app
        from .cluster.connect import connect

        with connect(None if ray == RAY_LOCAL else ray, err) as cluster:
            cluster_app.run(config, cluster, (gpu, vram, ram), bind, port)
        return
    uvicorn.run(create_app(config), host=bind, port=port, log_level="warning",
                timeout_graceful_shutdown=SHUTDOWN_GRACE_S)


@app.command()
def batch(jobs: str = typer.Argument(..., help="A .jsonl file: one A1111 txt2img request (JSON object) per line."),
          out_dir: str = typer.Option(..., "--out", help="Folder for the images (NNNNN-SEED.png, NNNNN = line number); "
                                      "a rerun skips the lines already there."),
          model: Optional[str] = typer.Option(None, "--model", help="The model to run: a path, or a catalogue name you pulled."),
          models_dir: Optional[str] = typer.Option(None, "--models-dir", help="A ComfyUI or A1111 models/ folder: lines "
                                                   "pick a model by name (override_settings.sd_model_checkpoint)."),
          ray: Optional[str] = typer.Option(None, "--ray", help="Run on a Ray cluster, one worker per GPU: its address "
                                            "(ray://HOST:10001 or HOST:6379), or none for a local one."),
          gpu: Optional[str] = typer.Option(None, help='Plan as for this card, e.g. "RTX 4060" (default: each worker probes its own).'),
          vram: Optional[str] = typer.Option(None, help="VRAM budget, e.g. 8GB."),
          ram: Optional[str] = typer.Option(None, help="RAM budget, e.g. 16GB."),
          quality: str = typer.Option("lossless", help="lossless | balanced | fast"),
          quiet: bool = typer.Option(False, "--quiet", help="No progress display.")) -> None:
    """Make the images of a JSONL file of A1111 txt2img requests, resumably, here or on a Ray cluster."""
    from .batch.jobs import read_jobs
    from .batch.outputs import prepare_dir
    from .batch.run import local_results, run_batch
    from .server.models import discover

    _check_quality(quality)
    registry = discover(model, models_dir)
    if not registry.models:
        raise UserError("lowvram batch has no model to run: give --model or --models-dir.")
    lines = read_jobs(jobs, registry, quality)
    prepare_dir(out_dir)
    err = Console(stderr=True, soft_wrap=True)
    console = None if quiet else err
    if ray is None:
        from .generate.session import LONG_LIVED_IMAGES_PER_LOAD, Session, planner_for
        from .plan.machine import resolve_run_machine

        session = Session(planner_for(resolve_run_machine(gpu, vram, ram)[0], quality, LONG_LIVED_IMAGES_PER_LOAD),
                          console=None)
        try:
            summary = run_batch(lines, out_dir, lambda pending: local_results(session, pending), console)
        finally:
            session.unload()
    else:
        from .batch.ray_data import ray_results
        from .cluster.connect import connect

        with connect(None if ray == RAY_LOCAL else ray, console) as cluster:
            summary = run_batch(lines, out_dir, lambda pending: ray_results(cluster, pending, (gpu, vram, ram), quality),
                                console)
    out.print(f"{summary.images} images written to {out_dir} ({summary.made} lines made, {summary.skipped} already there)",
              markup=False, highlight=False)


@app.command(name="list")
def list_installed(as_json: bool = typer.Option(False, "--json")) -> None:
    """Catalogue models installed in the Hugging Face cache, and where: full weights or GGUF quants."""
    from .hub import installed

    rows = installed()
    if as_json:
        _print_json([{k: v for k, v in r.__dict__.items() if k != "mtime"} for r in rows])
        return
    if not rows:
        out.print("No catalogue model is installed; `lowvram pull NAME` downloads one.")
        return
    t = Table(caption="*: what `lowvram generate --model NAME` loads (the variant pulled last)")
    for col in ("name", "variant", "repo", "size", "path"):
        t.add_column(col)
    for r in rows:
        t.add_row(r.name + (" *" if r.in_use else ""), r.variant, r.repo, format_bytes(r.size_bytes), r.path)
    out.print(t)


LORA_WEIGHT_LIMIT = 100.0  # |weight| beyond this is a typo, not a LoRA strength (A1111's UI slider spans -2..2)


def _lora_arg(text: str) -> tuple[str, float]:
    """FILE or FILE:WEIGHT (the weight defaults to 1). A file whose name holds a colon is taken whole when it
    exists; otherwise what follows the last colon must be a number."""
    import math

    path, sep, tail = text.rpartition(":")
    if not sep or os.path.exists(text) or not path:
        return text, 1.0
    try:
        weight = float(tail)
    except ValueError:
        raise UserError(f"--lora {text}: {tail!r} is not a weight; give FILE or FILE:WEIGHT with a number, "
                        "e.g. style.safetensors:0.8.") from None
    if not math.isfinite(weight) or abs(weight) > LORA_WEIGHT_LIMIT:
        raise UserError(f"--lora {text}: the weight {tail} is out of range; give a number such as 0.8 (1 = full strength).")
    return path, weight


def printable(text: str) -> str:
    """User strings (file names, prompts) with terminal control characters shown escaped, never sent to the
    terminal: a file name can carry escape sequences that rewrite the screen."""
    return "".join(ch if ch.isprintable() or ch in "\t" else ch.encode("unicode_escape").decode("ascii") for ch in text)


def main() -> None:
    """Entry point: run the app; a UserError becomes one sentence on stderr and exit status 2."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notices are not for users
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    try:
        app(args=_bare_options(sys.argv[1:]))
    except UserError as e:
        sys.stderr.write(f"lowvram: {printable(str(e))}\n")
        sys.exit(e.exit_code)
    except InternalError as e:
        sys.stderr.write(f"lowvram: internal error, please report it with the command you ran: {e}.\n")
        sys.exit(e.exit_code)
    except MemoryError:
        sys.stderr.write("lowvram: out of host memory: close other programs, or give a smaller --vram / --ram.\n")
        sys.exit(1)
    except RuntimeError as e:  # torch.OutOfMemoryError after every re-plan (imported only if torch is)
        if "out of memory" not in str(e).lower():
            raise
        sys.stderr.write("lowvram: out of GPU memory even after re-planning with fewer resident blocks: another "
                         "program holds VRAM; close it, or give a smaller --vram.\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("lowvram: interrupted.\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
