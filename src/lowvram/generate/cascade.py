"""DeepFloyd IF generation: stage I (1/16 of the final side) -> stage II (1/4) -> stage III (x4 upscaler).

diffusers' three pipelines are chained the way diffusers' IF docs do it: stage I's T5 encodes the prompt
once and the embeddings go to stages I and II (stage II has no text encoder of its own); each stage's
image goes to the next as a tensor; stage III encodes the prompt with its own CLIP. One PlanExecutor
holds all six modules, so the plan's phases decide what is on the GPU when (T5, UNet I, UNet II, CLIP,
UNet III, VAE), and one torch.Generator seeds every stage, so a seed gives the same image every time.

Settings: `--steps` and `--guidance` are stage I's. Stages II and III take steps in the reference ratio
100 : 50 : 75 (so the defaults are diffusers' 100, 50, 75) and keep their reference guidance 4 and 9;
guidance of 1 or less turns classifier-free guidance off in every stage, as the plan then assumes.
The progress bar counts the steps of all three stages together and names the stage it is in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..catalogue.deepfloyd import STAGES
from ..errors import UserError


@dataclass(frozen=True)
class StageRun:
    steps: int
    guidance: float
    noise_level: int | None


class _Stopped(Exception):
    """Ctrl-C seen after a step: IF's pipelines have no interrupt flag, so their step callback raises this."""


def check_request(req, rep):
    """Refuse what IF generation does not take, then find the stage folders; all before any planning."""
    from ..checkpoints.cascade import find_cascade

    if req.sampler:
        raise UserError("--sampler is not available for DeepFloyd IF: each stage runs its own reference scheduler.")
    if req.loras:
        raise UserError("LoRAs are not supported for DeepFloyd IF: run it without --lora.")
    cascade = find_cascade(req.model) if rep.format == "diffusers" and not (req.config or req.models_dir) else None
    if cascade is None:
        raise UserError(f"DeepFloyd IF generates from its three diffusers folders: give --model the folder that holds "
                        f"{', '.join(s.folder for s in STAGES)} (or run `lowvram pull deepfloyd-if`), without --config or --models-dir.")
    cascade.require_all()
    return cascade


def stage_runs(steps: int, guidance: float) -> list[StageRun]:
    """Steps, guidance and noise level of stages I, II, III for the user's (stage I) steps and guidance."""
    ref = STAGES[0].steps
    out = []
    for s in STAGES:
        n = steps if s is STAGES[0] else max(1, round(steps * s.steps / ref))
        g = guidance if s is STAGES[0] or guidance <= 1.0 else s.guidance
        out.append(StageRun(n, g, s.noise_level))
    return out


def generate_cascade(req, cascade, spec, plan, width: int, height: int, steps: int, guidance: float,
                     device: torch.device, compute: torch.dtype, console=None):
    """Load the three stages under `plan`, run them, write the final stage's PNGs; a GenerateResult."""
    import psutil

    from ..runtime.executor import PlanExecutor
    from .loader import load_cascade
    from .output import plan_summary, write_pngs
    from .progress import StepWatch
    from .run import GenerateResult

    t0 = time.perf_counter()
    (s1, s2, s3), modules = load_cascade(cascade, plan, compute)
    for pipe in (s1, s2, s3):
        pipe.set_progress_bar_config(disable=True)  # ours counts all stages
    runs = stage_runs(steps, guidance)
    executor = PlanExecutor(plan, modules, device).apply()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_run = time.perf_counter()
    watch = StepWatch(None if req.quiet else console, sum(r.steps for r in runs), label="stage I")

    def callback(i, t, latents):
        if watch.advance():
            raise _Stopped

    gen = torch.Generator("cpu").manual_seed(req.seed)
    prompts = [req.prompt] * req.batch
    negatives = [req.negative] * req.batch if req.negative else None
    h1, w1 = (height // spec.component("unet").pixel_divisor, width // spec.component("unet").pixel_divisor)
    h2, w2 = (height // spec.component("unet_2").pixel_divisor, width // spec.component("unet_2").pixel_divisor)
    r1, r2, r3 = runs
    images = None
    try:
        with watch, torch.no_grad():
            embeds, negative_embeds = s1.encode_prompt(prompts, r1.guidance > 1.0, device=device, negative_prompt=negatives,
                                                       clean_caption=False)  # cleaning needs bs4 + ftfy: used as typed
            image = s1(prompt_embeds=embeds, negative_prompt_embeds=negative_embeds, height=h1, width=w1,
                       num_inference_steps=r1.steps, guidance_scale=r1.guidance, generator=gen, output_type="pt",
                       callback=callback).images
            watch.label("stage II")
            image = s2(image=image, prompt_embeds=embeds, negative_prompt_embeds=negative_embeds, height=h2, width=w2,
                       num_inference_steps=r2.steps, guidance_scale=r2.guidance, noise_level=r2.noise_level,
                       generator=gen, output_type="pt", callback=callback).images
            watch.label("stage III")
            # stages I and II return [-1, 1] tensors; the upscaler takes images in [0, 1]
            images = s3(prompt=prompts, negative_prompt=negatives, image=(image / 2 + 0.5).clamp(0, 1),
                        num_inference_steps=r3.steps, guidance_scale=r3.guidance, noise_level=r3.noise_level,
                        generator=gen, output_type="np", callback=callback).images
    except _Stopped:
        pass
    finally:
        executor.remove()
    seconds = time.perf_counter() - t0
    run_seconds = time.perf_counter() - t_run
    if images is None:
        return GenerateResult([], plan, seconds, 0, 0, interrupted_at=watch.step)
    params = {"Steps": r1.steps, "Sampler": type(s1.scheduler).__name__, "CFG scale": r1.guidance, "Seed": req.seed,
              "Model": spec.name}
    for name, r, pipe in (("II", r2, s2), ("III", r3, s3)):
        params[f"Stage {name}"] = (f"{r.steps} steps, {type(pipe.scheduler).__name__}, CFG scale {r.guidance}, "
                                   f"noise level {r.noise_level}")
    params["lowvram plan"] = plan_summary(plan)
    paths = write_pngs(images, req.output, req.prompt, req.negative, params)
    peak_vram = torch.cuda.max_memory_allocated() if device.type == "cuda" else executor.accountant.peak
    return GenerateResult(paths, plan, seconds, peak_vram, psutil.Process().memory_info().rss, replans=executor.replans,
                          load_seconds=seconds - run_seconds, run_seconds=run_seconds)
