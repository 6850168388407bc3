"""`lowvram generate`: inspect, plan, load under the plan, denoise with progress, write PNGs + report."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import torch

from ..errors import UserError

SAMPLERS = {  # A1111 name -> diffusers scheduler class
    "euler": "EulerDiscreteScheduler", "euler_a": "EulerAncestralDiscreteScheduler", "dpm++_2m": "DPMSolverMultistepScheduler",
    "ddim": "DDIMScheduler", "unipc": "UniPCMultistepScheduler", "flow_euler": "FlowMatchEulerDiscreteScheduler",
}


@dataclass
class GenerateRequest:
    prompt: str
    model: str
    negative: str = ""
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int = 0
    batch: int = 1
    sampler: str | None = None
    output: str = "lowvram.png"
    quiet: bool = False
    init_image: str | None = None  # img2img (with `strength`), or inpaint with `mask`
    strength: float = 0.75
    mask: str | None = None
    config: str | None = None  # for single files: a diffusers folder with the configs and tokenizers
    loras: list = field(default_factory=list)  # [(path, weight)]
    controlnet: str | None = None  # a diffusers ControlNet folder
    control_image: str | None = None
    control_scale: float = 1.0
    models_dir: str | None = None  # a ComfyUI / A1111 models/ tree to find the model and its parts in


@dataclass
class GenerateResult:
    paths: list[str]
    plan: object
    seconds: float
    peak_vram_bytes: int
    peak_ram_bytes: int
    interrupted_at: int | None = None
    replans: list[str] = field(default_factory=list)
    load_seconds: float = 0.0  # reading weights into their planned places
    run_seconds: float = 0.0  # the pipeline call: what the plan's seconds_per_image predicts


def generate(req: GenerateRequest, plan_fn, console=None) -> GenerateResult:
    """Run one generation. `plan_fn(spec, workload, file_weights) -> Plan` comes from the front end
    (machine, policy); file_weights are the GGUF components of the inspected files."""
    import psutil

    from ..catalogue import MODELS
    from ..checkpoints.inspect import inspect_path
    from ..checkpoints.lora_size import lora_file_bytes
    from ..plan import Workload
    from ..runtime.executor import PlanExecutor
    from ..runtime.precision import compute_dtype, run_device
    from ..units import check_count, check_resolution
    from .loader import load_pipeline, read_index
    from .output import plan_summary, write_pngs
    from .progress import StepWatch

    hint = None
    if req.config and os.path.isfile(os.path.join(req.config, "model_index.json")):
        hint = read_index(req.config).get("_class_name")
    if req.models_dir:
        from ..checkpoints.inspect import find_in_models_dir, inspect_with_models_dir

        model_file = req.model if os.path.isfile(req.model) else find_in_models_dir(req.model, req.models_dir)
        rep = inspect_with_models_dir(model_file, req.models_dir, pipeline_hint=hint)
    else:
        rep = inspect_path(req.model, pipeline_hint=hint)
    if rep.architecture is None:
        raise UserError(f"{req.model} is a lone {rep.variant}, not a model: give the folder that also holds the diffusion model.")
    spec = MODELS[rep.architecture]
    cascade = None
    if spec.family == "deepfloyd-if":  # three pipelines from three folders (generate/cascade.py)
        from .cascade import check_request

        cascade = check_request(req, rep)
    width, height = req.width or spec.width, req.height or spec.height
    check_resolution(width, height, spec.latent_factor, spec.name)
    steps = spec.steps if req.steps is None else req.steps
    check_count(steps, 1, 1000, "--steps", "steps")
    check_count(req.batch, 1, 64, "--batch", "images")
    if req.sampler and req.sampler.lower() not in SAMPLERS:
        raise UserError(f"Unknown --sampler {req.sampler!r}: choose one of {', '.join(SAMPLERS)}.")
    lora_bytes = tuple(lora_file_bytes(path) for path, _ in req.loras)  # headers only; UserError if missing
    guidance = spec.guidance if req.guidance is None else req.guidance
    if guidance < 0:
        raise UserError(f"--guidance {guidance} is negative: give 0 or more.")
    init, mask = _images(req, width, height, spec)
    control = _control_image(req, width, height, spec)
    wl = Workload(width, height, req.batch, steps, guidance > 1.0 or not spec.uses_cfg, controlnet=control is not None,
                  img2img=init is not None, lora_bytes=lora_bytes, controlnet_path=req.controlnet if control else "")
    plan = plan_fn(spec, wl, rep.file_weights())
    if not plan.fits:
        raise UserError(f"{spec.name} does not fit this machine at {width}x{height}: {plan.lossy_reason or 'see `lowvram plan`'}.")
    device, compute = run_device(plan), compute_dtype(plan)
    out_dir = os.path.dirname(os.path.abspath(req.output))
    if not os.path.isdir(out_dir):
        raise UserError(f"The output folder {out_dir} does not exist: create it or choose another -o path.")
    restore_fraction = _cap_cuda_memory(device, plan.machine.vram_bytes)  # loading must fit too
    if cascade is not None:
        from .cascade import generate_cascade

        try:
            return generate_cascade(req, cascade, spec, plan, width, height, steps, guidance, device, compute, console)
        finally:
            restore_fraction()
    t0 = time.perf_counter()
    if rep.format == "diffusers":
        pipe, modules = load_pipeline(req.model, plan, compute)
    else:
        from .single_file import load_single_file_pipeline

        pipe, modules = load_single_file_pipeline(rep, spec, plan, compute, req.config)
    lora_hooks = []
    if req.loras:
        from ..runtime.lora import apply_loras

        lora_hooks = apply_loras(modules, req.loras, type(pipe), device, compute)
    if init is not None:
        pipe = _mode_pipeline(pipe, inpaint=mask is not None)
    pipe.set_progress_bar_config(disable=True)  # ours (rich, with ETA) replaces diffusers' tqdm bar
    if req.sampler:
        import diffusers

        pipe.scheduler = getattr(diffusers, SAMPLERS[req.sampler.lower()]).from_config(pipe.scheduler.config)
    companions = {}
    if control is not None:
        from .loader import load_controlnet

        from ..catalogue.controlnet import residual_mismatch

        modules["controlnet"] = load_controlnet(req.controlnet, compute, plan)
        companions["controlnet"] = next(c.name for c in spec.components if c.role == "denoiser")
        cn, den = modules["controlnet"], modules[companions["controlnet"]]
        why = residual_mismatch(dict(den.config), dict(cn.config), type(cn).__name__)
        if why is not None:  # caught here, before denoising, instead of as a shape error inside diffusers
            raise UserError(f"The ControlNet in {req.controlnet} was made for another model than {req.model} "
                            f"({why}): use a ControlNet trained for this model.")
        pipe = _controlnet_pipeline(pipe, modules["controlnet"])
    executor = PlanExecutor(plan, modules, device, companions=companions).apply()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_run = time.perf_counter()
    watch = StepWatch(None if req.quiet else console, steps)

    def on_step_end(p, i, t, kwargs):
        if watch.advance():
            p._interrupt = True
        return kwargs

    gen = torch.Generator("cpu").manual_seed(req.seed)
    kwargs = dict(prompt=[req.prompt] * req.batch, height=height, width=width, num_inference_steps=steps,
                  generator=gen, output_type="np", callback_on_step_end=on_step_end)
    if spec.uses_cfg or spec.family == "flux":
        kwargs["guidance_scale"] = guidance
    if spec.family == "qwen-image":  # "true" CFG: needs a negative prompt to run the second pass
        kwargs["true_cfg_scale"] = guidance
        kwargs["negative_prompt"] = [req.negative or " "] * req.batch
    if spec.family == "pixart":
        kwargs["clean_caption"] = False  # needs BeautifulSoup and ftfy; the prompt is used as typed
    if req.negative and spec.uses_cfg:
        kwargs["negative_prompt"] = [req.negative] * req.batch
    if control is not None:
        key = "control_image" if spec.family == "flux" else "image"
        kwargs.update({key: control, "controlnet_conditioning_scale": req.control_scale})
    if init is not None:
        kwargs.update(image=init, strength=req.strength)
        if mask is not None:
            kwargs["mask_image"] = mask
    try:
        with watch, torch.no_grad():
            images = pipe(**kwargs).images
    finally:
        executor.remove()
        for h in lora_hooks:
            h.remove()
        restore_fraction()
    seconds = time.perf_counter() - t0
    run_seconds = time.perf_counter() - t_run
    if watch.interrupt:
        return GenerateResult([], plan, seconds, 0, 0, interrupted_at=watch.step)
    params = {"Steps": steps, "Sampler": req.sampler or type(pipe.scheduler).__name__, "CFG scale": guidance,
              "Seed": req.seed, "Model": spec.name,
              "Lora hashes": ", ".join(f"{os.path.basename(p)}: {w}" for p, w in req.loras) or None,
              "lowvram plan": plan_summary(plan)}
    paths = write_pngs(images, req.output, req.prompt, req.negative, params)
    peak_vram = torch.cuda.max_memory_allocated() if device.type == "cuda" else executor.accountant.peak
    return GenerateResult(paths, plan, seconds, peak_vram, psutil.Process().memory_info().rss, replans=executor.replans,
                          load_seconds=seconds - run_seconds, run_seconds=run_seconds)


def _cap_cuda_memory(device: torch.device, vram_bytes: int):
    """Hold this process to the planned VRAM when it is less than the card has (`--vram 6GB` on a
    24 GB card leaves the rest to other programs, and is how budgets are tested on a big GPU).
    Returns a function that lifts the cap again."""
    if device.type != "cuda" or vram_bytes <= 0:
        return lambda: None
    total = torch.cuda.get_device_properties(device).total_memory
    if vram_bytes >= total:
        return lambda: None
    index = device.index if device.index is not None else torch.cuda.current_device()  # torch wants an index here
    torch.cuda.set_per_process_memory_fraction(vram_bytes / total, index)
    return lambda: torch.cuda.set_per_process_memory_fraction(1.0, index)


IMG2IMG_FAMILIES = ("sd1", "sd2", "sdxl", "sd3", "flux")


def _read_image(path: str, what: str, mode: str):
    """An image file as a PIL image in `mode`, or one sentence saying why not."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert(mode).copy()
    except FileNotFoundError:
        raise UserError(f"The {what} {path} does not exist.") from None
    except (UnidentifiedImageError, OSError):
        raise UserError(f"The {what} {path} is not an image lowvram can read (PNG, JPEG, WebP...).") from None


def _images(req: GenerateRequest, width: int, height: int, spec):
    """The init image and mask, checked before anything is loaded."""
    if req.mask and not req.init_image:
        raise UserError("--mask needs --init-image: inpainting paints into an existing image.")
    if not req.init_image:
        return None, None
    if spec.family not in IMG2IMG_FAMILIES:
        raise UserError(f"img2img and inpaint are supported for SD1.5, SDXL, SD3.5 and Flux, not {spec.name}.")
    if not 0.0 < req.strength <= 1.0:
        raise UserError(f"--strength {req.strength} is out of range: give a number above 0 and at most 1.")
    init = _read_image(req.init_image, "init image", "RGB")
    mask = _read_image(req.mask, "mask", "L") if req.mask else None
    if mask is not None and mask.size != init.size:
        raise UserError(f"The mask is {mask.size[0]}x{mask.size[1]} but the init image is {init.size[0]}x{init.size[1]}: "
                        "they must be the same size.")
    init = init.resize((width, height))
    return init, (mask.resize((width, height)) if mask is not None else None)


def _control_image(req: GenerateRequest, width: int, height: int, spec):
    from ..catalogue.controlnet import CONTROLNET_FAMILIES

    if not req.controlnet and not req.control_image:
        return None
    if not (req.controlnet and req.control_image):
        raise UserError("--controlnet and --control-image go together: give both.")
    if spec.family not in CONTROLNET_FAMILIES:
        raise UserError(f"ControlNet is supported for SD1.5, SDXL and Flux, not {spec.name}.")
    if req.init_image:
        raise UserError("ControlNet with --init-image is not supported yet: use one or the other.")
    if not os.path.isfile(os.path.join(req.controlnet, "config.json")):
        raise UserError(f"{req.controlnet} is not a diffusers ControlNet folder (no config.json).")
    return _read_image(req.control_image, "control image", "RGB").resize((width, height))


def _controlnet_pipeline(pipe, controlnet):
    from diffusers import AutoPipelineForText2Image

    return AutoPipelineForText2Image.from_pipe(pipe, controlnet=controlnet)


def _mode_pipeline(pipe, inpaint: bool):
    """The img2img / inpaint pipeline of the same family, sharing the already-loaded components."""
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

    auto = AutoPipelineForInpainting if inpaint else AutoPipelineForImage2Image
    return auto.from_pipe(pipe)


