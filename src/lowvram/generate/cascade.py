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


def run_cascade(r, pipes, device: torch.device, observer):
    """Run the three loaded stages for a resolved request; (images, infotext fields), or (None, None) when
    the observer asked to stop. One generator seeds every stage."""
    from .samplers import a1111_names

    s1, s2, s3 = pipes
    req, spec = r.req, r.spec
    runs = stage_runs(r.steps, r.guidance)
    observer.label("stage I")

    def callback(i, t, latents):
        if observer.advance(latents):
            raise _Stopped

    gen = torch.Generator("cpu").manual_seed(r.seeds[0])
    prompts = [req.prompt] * req.batch
    negatives = [req.negative] * req.batch if req.negative else None
    h1, w1 = (r.height // spec.component("unet").pixel_divisor, r.width // spec.component("unet").pixel_divisor)
    h2, w2 = (r.height // spec.component("unet_2").pixel_divisor, r.width // spec.component("unet_2").pixel_divisor)
    r1, r2, r3 = runs
    try:
        with observer, torch.no_grad():
            embeds, negative_embeds = s1.encode_prompt(prompts, r1.guidance > 1.0, device=device, negative_prompt=negatives,
                                                       clean_caption=False)  # cleaning needs bs4 + ftfy: used as typed
            image = s1(prompt_embeds=embeds, negative_prompt_embeds=negative_embeds, height=h1, width=w1,
                       num_inference_steps=r1.steps, guidance_scale=r1.guidance, generator=gen, output_type="pt",
                       callback=callback).images
            observer.label("stage II")
            image = s2(image=image, prompt_embeds=embeds, negative_prompt_embeds=negative_embeds, height=h2, width=w2,
                       num_inference_steps=r2.steps, guidance_scale=r2.guidance, noise_level=r2.noise_level,
                       generator=gen, output_type="pt", callback=callback).images
            observer.label("stage III")
            # stages I and II return [-1, 1] tensors; the upscaler takes images in [0, 1]
            images = s3(prompt=prompts, negative_prompt=negatives, image=(image / 2 + 0.5).clamp(0, 1),
                        num_inference_steps=r3.steps, guidance_scale=r3.guidance, noise_level=r3.noise_level,
                        generator=gen, output_type="np", callback=callback).images
    except _Stopped:
        return None, None
    sampler, schedule = a1111_names(s1.scheduler)
    params = {"Steps": r1.steps, "Sampler": sampler, "Schedule type": schedule, "CFG scale": r1.guidance}
    for name, run, pipe in (("II", r2, s2), ("III", r3, s3)):
        params[f"Stage {name}"] = (f"{run.steps} steps, {a1111_names(pipe.scheduler)[0]}, CFG scale {run.guidance}, "
                                   f"noise level {run.noise_level}")
    # the batch shares one seed through one generator: every image records it
    r.seeds[:] = [r.seeds[0]] * len(images)
    return images, params
