"""The one way to run models: Request -> Resolved -> Plan -> Loaded -> Result.

A Session is what `lowvram generate` (once), the DeepFloyd IF cascade and `lowvram serve` (for its whole
life) hold. `resolve` checks everything a request says — model files (headers only), sizes, steps,
guidance, seed, images, output path — before any weight is read. `run` plans, loads (or keeps what is
loaded), installs the plan's executor, denoises and returns the images with their A1111 infotext.

Between requests the model stays loaded when the next request names the same files and its plan keeps
every component's precision and source: then only the executor (placement hooks) is replaced when the
plan changes (size, batch), and LoRA hooks when the LoRAs change. Another model unloads the first
completely: every hook removed by its handle, the modules dropped, memory returned to the OS.
"""

from __future__ import annotations

import gc
import math
import os
import secrets
import time
from dataclasses import dataclass, field, replace

import torch

from ..errors import UserError
from .request import MAX_BATCH, MAX_GUIDANCE, MAX_SEED, MAX_STEPS, SEED_RANDOM, GenerateRequest, GenerateResult

IMG2IMG_FAMILIES = ("sd1", "sd2", "sdxl", "sd3", "flux")
# A server, a batch or a Ray replica keeps its model for many images: placing the weights (copies,
# page-locking the streamed part) is charged over this many images, not to each one (Workload.images_per_load).
LONG_LIVED_IMAGES_PER_LOAD = 100


@dataclass
class Resolved:
    """A request checked and completed: everything needed to plan, nothing read but headers."""

    req: GenerateRequest
    rep: object  # checkpoints.inspect.Inspection
    spec: object  # catalogue ModelSpec
    width: int
    height: int
    steps: int
    guidance: float
    seeds: list[int]
    init: object = None  # PIL images, already at width x height
    mask: object = None
    control: object = None
    cascade: object = None  # DeepFloyd IF's stage folders
    workload: object = None
    outputs: list[str] = field(default_factory=list)  # the files to write, one per image ([] = in memory)
    notes: list[str] = field(default_factory=list)

    @property
    def model_key(self) -> tuple:
        """What identifies the loaded weights: the same key and plan precisions reuse them."""
        r = self.req
        return (os.path.abspath(r.model), r.config, r.models_dir, r.controlnet if self.control is not None else None)


@dataclass
class Loaded:
    """A model in memory under a plan: the pipeline, its modules and the executor placing them."""

    key: tuple
    plan: object
    pipe: object  # the base (txt2img) pipeline, or the cascade's three stages
    modules: dict
    executor: object
    device: torch.device
    compute: torch.dtype
    lift_cap: object  # lifts the CUDA memory cap set for this model
    companions: dict = field(default_factory=dict)
    loras: tuple = ()
    lora_hooks: list = field(default_factory=list)
    scheduler: object = None  # the pipeline's own scheduler, restored before each request (--sampler swaps it)
    load_seconds: dict = field(default_factory=dict)  # measured seconds per component, by the plan's names


def _weights_signature(plan) -> tuple:
    """What the loaded tensors depend on: each component's storage precision, compute dtype and source."""
    return tuple((c.name, c.precision, c.compute_dtype, c.source) for c in plan.components)


class Session:
    """Holds at most one loaded model and runs requests on it (not thread-safe: one worker calls it)."""

    def __init__(self, planner, console=None, where: str = "") -> None:
        """`planner(spec, workload, file_weights, quality) -> Plan` (see `planner_for`); `console`: where the
        one line of what runs where (`where`, from plan.machine.resolve_run_machine, with the plan) and the
        progress go (None: nowhere). The line comes after the request is checked, so bad input gets its one
        sentence alone."""
        self.planner = planner
        self.console = console
        self.where = where
        self.loaded: Loaded | None = None

    # -- Request -> Resolved ---------------------------------------------------------------------------
    def resolve(self, req: GenerateRequest) -> Resolved:
        """Check the request whole, before planning or reading a weight; one sentence on the first problem."""
        from ..catalogue import MODELS
        from ..catalogue.folder import folder_spec
        from ..checkpoints.diffusers_index import read_index
        from ..checkpoints.inspect import inspect_path
        from ..checkpoints.lora_size import lora_file_bytes
        from ..plan import Workload
        from ..units import check_count, check_resolution
        from . import inputs

        if not isinstance(req.prompt, str):
            raise UserError("The prompt must be text.")
        hint = None
        if req.config and os.path.isfile(os.path.join(req.config, "model_index.json")):
            hint = read_index(req.config).get("_class_name")
        if req.models_dir:
            from ..checkpoints.inspect import find_in_models_dir, inspect_with_models_dir

            model_file = req.model if os.path.isfile(req.model) else find_in_models_dir(req.model, req.models_dir)
            rep = inspect_with_models_dir(model_file, req.models_dir, pipeline_hint=hint)
        else:
            if not os.path.exists(req.model):
                raise UserError(f"{req.model} does not exist: give a diffusers folder, a checkpoint file or a folder of component files.")
            rep = inspect_path(req.model, pipeline_hint=hint)
        if rep.architecture is None:
            raise UserError(f"{req.model} is a lone {rep.variant}, not a model: give the folder that also holds the diffusion model.")
        spec = folder_spec(MODELS[rep.architecture], rep)  # a diffusers folder's own configs (a distilled variant)
        cascade = None
        if spec.family == "deepfloyd-if":  # three pipelines from three folders (generate/cascade.py)
            from .cascade import check_request

            cascade = check_request(req, rep)
        notes: list[str] = []
        steps = spec.steps if req.steps is None else req.steps
        _check_int(steps, "--steps")
        check_count(steps, 1, MAX_STEPS, "--steps", "steps")
        _check_int(req.batch, "--batch")
        check_count(req.batch, 1, MAX_BATCH, "--batch", "images")
        guidance = spec.guidance if req.guidance is None else req.guidance
        if not isinstance(guidance, (int, float)) or not math.isfinite(guidance) or not 0 <= guidance <= MAX_GUIDANCE:
            raise UserError(f"--guidance {guidance} is not a number from 0 to {MAX_GUIDANCE:g}: give e.g. {spec.guidance}.")
        if not 0.0 < req.strength <= 1.0 or not math.isfinite(req.strength):
            raise UserError(f"--strength {req.strength} is out of range: give a number above 0 and at most 1.")
        seeds = _seeds(req.seed, req.batch, notes)
        if req.sampler or req.schedule:
            from .samplers import resolve_sampler

            resolve_sampler(req.sampler, req.schedule, spec.family)  # UserError for an unknown name, before loading
        lora_bytes = tuple(lora_file_bytes(path) for path, _ in req.loras)  # headers only; UserError if missing

        init = mask = control = None
        if req.mask is not None and req.init_image is None:
            raise UserError("--mask needs --init-image: inpainting paints into an existing image.")
        if req.init_image is not None:
            if spec.family not in IMG2IMG_FAMILIES:
                raise UserError(f"img2img and inpaint are supported for SD1.5, SDXL, SD3.5 and Flux, not {spec.name}.")
            init = inputs.read_image(req.init_image, "init image", "RGB")
            mask = inputs.read_image(req.mask, "mask", "L") if req.mask is not None else None
            if mask is not None and mask.size != init.size:
                raise UserError(f"The mask is {mask.size[0]}x{mask.size[1]} but the init image is {init.size[0]}x{init.size[1]}: "
                                "they must be the same size.")
        if req.controlnet or req.control_image is not None:
            from ..catalogue.controlnet import CONTROLNET_FAMILIES

            if not (req.controlnet and req.control_image is not None):
                raise UserError("--controlnet and --control-image go together: give both.")
            if spec.family not in CONTROLNET_FAMILIES:
                raise UserError(f"ControlNet is supported for SD1.5, SDXL and Flux, not {spec.name}.")
            if init is not None:
                raise UserError("ControlNet with --init-image is not supported yet: use one or the other.")
            if not os.path.isfile(os.path.join(req.controlnet, "config.json")):
                raise UserError(f"{req.controlnet} is not a diffusers ControlNet folder (no config.json).")
            if not 0.0 <= req.control_start < req.control_end <= 1.0:
                raise UserError(f"The ControlNet acts from {req.control_start:g} to {req.control_end:g} of the steps: give "
                                "a start below its end, both from 0 to 1.")
            control = inputs.read_image(req.control_image, "control image", "RGB")

        width, height = req.width, req.height
        if init is not None and width is None and height is None:
            width, height = inputs.size_from_image(init, spec.latent_factor)
            if (width, height) != init.size:
                notes.append(f"init image {init.size[0]}x{init.size[1]} used at {width}x{height} (multiples of {spec.latent_factor})")
        width = spec.width if width is None else width
        height = spec.height if height is None else height
        check_resolution(width, height, spec.latent_factor, spec.name)
        if init is not None:
            init = inputs.fit(init, width, height, req.resize_mode)
            mask = inputs.fit(mask, width, height, req.resize_mode) if mask is not None else None
        if control is not None:
            control = inputs.fit(control, width, height, req.resize_mode)

        outputs = _output_paths(req.output, req.batch) if req.output else []
        wl = Workload(width, height, req.batch, steps, guidance > 1.0 or not spec.uses_cfg, controlnet=control is not None,
                      img2img=init is not None, lora_bytes=lora_bytes,
                      controlnet_path=req.controlnet if control is not None else "")
        return Resolved(req, rep, spec, width, height, steps, float(guidance), seeds, init, mask, control, cascade, wl,
                        outputs, notes)

    # -- Resolved -> Plan --------------------------------------------------------------------------------
    def plan(self, r: Resolved):
        p = self.planner(r.spec, r.workload, r.rep.file_weights(), r.req.quality)
        if not p.fits:
            raise UserError(f"{r.spec.name} does not fit this machine at {r.width}x{r.height}: "
                            f"{p.lossy_reason or 'see `lowvram plan`'}.")
        return p

    # -- Plan -> Loaded ----------------------------------------------------------------------------------
    def _ensure_loaded(self, r: Resolved, plan) -> tuple[Loaded, bool]:
        """The model loaded under `plan`: kept if already loaded with the same weights, else (re)loaded."""
        cur = self.loaded
        if cur is not None and cur.key == r.model_key and _weights_signature(cur.plan) == _weights_signature(plan):
            if cur.plan != plan:  # same tensors, other placement (size, batch): a new executor only
                from ..runtime.executor import PlanExecutor

                cur.executor.remove()
                cur.executor = PlanExecutor(plan, cur.modules, cur.device, companions=cur.companions).apply()
                cur.plan = plan
            return cur, True
        self.unload()
        self.loaded = self._load(r, plan)
        return self.loaded, False

    def _load(self, r: Resolved, plan) -> Loaded:
        from ..runtime.device import cap_cuda_memory
        from ..runtime.executor import PlanExecutor
        from ..runtime.precision import compute_dtype, run_device

        device = run_device(plan)  # the device the plan was made for: its bytes and dtypes are counted for it
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"The plan is for a CUDA GPU ({plan.machine.name}) but torch finds none here: plan for this "
                            "machine (plan.machine.resolve_run_machine), or install the torch build for your card.")
        compute = compute_dtype(plan)
        lift = cap_cuda_memory(device, plan.machine.vram_bytes)  # loading must fit too
        timings: dict[str, float] = {}
        try:
            companions = {}
            if r.cascade is not None:
                from .loader import load_cascade

                pipe, modules = load_cascade(r.cascade, plan, compute, timings)
                for p in pipe:
                    p.set_progress_bar_config(disable=True)  # ours counts all stages
            else:
                if r.rep.format == "diffusers":
                    from .loader import load_pipeline

                    pipe, modules = load_pipeline(r.req.model, plan, compute, timings=timings)
                else:
                    from .single_file import load_single_file_pipeline

                    pipe, modules = load_single_file_pipeline(r.rep, r.spec, plan, compute, r.req.config, timings)
                pipe.set_progress_bar_config(disable=True)  # ours (rich, with ETA) replaces diffusers' tqdm bar
                if r.control is not None:
                    t0 = time.perf_counter()
                    pipe, companions = self._attach_controlnet(r, pipe, modules, compute, plan)
                    timings["controlnet"] = time.perf_counter() - t0
            executor = PlanExecutor(plan, modules, device, companions=companions).apply()
        except BaseException:
            lift()
            raise
        scheduler = None if r.cascade is not None else pipe.scheduler
        return Loaded(r.model_key, plan, pipe, modules, executor, device, compute, lift, companions, scheduler=scheduler,
                      load_seconds=timings)

    @staticmethod
    def _attach_controlnet(r: Resolved, pipe, modules, compute, plan):
        from diffusers import AutoPipelineForText2Image

        from ..catalogue.controlnet import residual_mismatch
        from .loader import load_controlnet

        modules["controlnet"] = load_controlnet(r.req.controlnet, compute, plan)
        partner = next(c.name for c in r.spec.components if c.role == "denoiser")
        cn, den = modules["controlnet"], modules[partner]
        why = residual_mismatch(dict(den.config), dict(cn.config), type(cn).__name__)
        if why is not None:  # caught here, before denoising, instead of as a shape error inside diffusers
            raise UserError(f"The ControlNet in {r.req.controlnet} was made for another model than {r.req.model} "
                            f"({why}): use a ControlNet trained for this model.")
        return AutoPipelineForText2Image.from_pipe(pipe, controlnet=cn), {"controlnet": partner}

    def _set_loras(self, loaded: Loaded, loras: list) -> None:
        """LoRAs are forward hooks on the loaded modules: changing them never reloads the model."""
        want = tuple((os.path.abspath(p), float(w)) for p, w in loras)
        if want == loaded.loras:
            return
        for h in loaded.lora_hooks:
            h.remove()
        loaded.lora_hooks, loaded.loras = [], ()
        if want:
            from ..runtime.lora import apply_loras

            pipe_cls = type(loaded.pipe[0] if isinstance(loaded.pipe, list) else loaded.pipe)
            loaded.lora_hooks = apply_loras(loaded.modules, list(want), pipe_cls, loaded.device, loaded.compute)
            loaded.loras = want

    def unload(self) -> None:
        """Drop the loaded model: hooks removed by handle, modules released, memory back to the OS."""
        cur, self.loaded = self.loaded, None
        if cur is None:
            return
        try:
            cur.executor.remove()
            for h in cur.lora_hooks:
                h.remove()
        finally:
            cur.lift_cap()
            device = cur.device
            del cur
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            _release_freed_memory()

    # -- Loaded -> Result --------------------------------------------------------------------------------
    def run(self, req: GenerateRequest, observer=None) -> GenerateResult:
        """Resolve, plan, load (or keep), denoise; writes `req.output` when given. `observer`: a StepWatch-like
        object (context manager with advance(latents) -> stop?, label(text), step, interrupt) that sees every
        step; by default a StepWatch on the session's console."""
        import psutil

        from .progress import StepWatch

        r = self.resolve(req)
        plan = self.plan(r)
        t0 = time.perf_counter()
        self._say_where(r, plan)
        loaded, reused = self._ensure_loaded(r, plan)
        self._set_loras(loaded, req.loras)
        load_seconds = time.perf_counter() - t0
        executor = loaded.executor
        n_replans = len(executor.replans)
        cache0 = replace(executor.step_cache.stats) if executor.step_cache is not None else None
        if loaded.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        if observer is None:
            observer = StepWatch(None if req.quiet else self.console, self._total_steps(r))
        t_run = time.perf_counter()
        try:
            if r.cascade is not None:
                from .cascade import run_cascade

                images, params = run_cascade(r, loaded.pipe, loaded.device, observer)
            else:
                images, params = self._denoise(r, loaded, observer)
        except BaseException:
            if loaded.device.type == "cuda":  # a failed run may leave the device full: start clean next time
                self.unload()
            raise
        run_seconds = time.perf_counter() - t_run
        seconds = time.perf_counter() - t0
        replans = executor.replans[n_replans:]
        if images is None:
            return GenerateResult([], plan, seconds, 0, 0, interrupted_at=observer.step, replans=replans,
                                  load_seconds=load_seconds, reused=reused, device=loaded.device.type, notes=r.notes,
                                  component_load_seconds={} if reused else dict(loaded.load_seconds))
        infotexts = self._infotexts(r, plan, params, images)
        paths = []
        if r.outputs:
            from .output import write_images

            paths = write_images(images, r.outputs, infotexts)
        peak_vram = torch.cuda.max_memory_allocated() if loaded.device.type == "cuda" else executor.accountant.peak
        cache = executor.step_cache.stats if cache0 is not None else None
        return GenerateResult(paths, plan, seconds, peak_vram, psutil.Process().memory_info().rss, replans=replans,
                              step_cache_calls=cache.calls - cache0.calls if cache else 0,
                              step_cache_skipped=cache.skipped - cache0.skipped if cache else 0,
                              load_seconds=load_seconds, run_seconds=run_seconds, images=list(images),
                              infotexts=infotexts, seeds=r.seeds, reused=reused, device=loaded.device.type, notes=r.notes,
                              component_load_seconds={} if reused else dict(loaded.load_seconds))

    def _say_where(self, r: Resolved, plan) -> None:
        """Before loading: the plan this run follows, and what the session decided for the request."""
        if self.console is None or r.req.quiet:
            return
        from .output import plan_summary

        where = f"{self.where}; " if self.where else ""
        self.console.print(f"{where}plan: {plan_summary(plan)}; predicted {plan.seconds_per_image:.1f} s on "
                           f"{plan.machine.name}", markup=False, highlight=False)
        for n in r.notes:
            self.console.print(f"note: {n}", markup=False, highlight=False)

    @staticmethod
    def _total_steps(r: Resolved) -> int:
        if r.cascade is not None:
            from .cascade import stage_runs

            return sum(s.steps for s in stage_runs(r.steps, r.guidance))
        if r.init is not None:  # diffusers runs int(steps * strength) steps for img2img / inpaint
            return max(1, min(r.steps, int(r.steps * r.req.strength)))
        return r.steps

    def _denoise(self, r: Resolved, loaded: Loaded, observer):
        """One pipeline call for the batch; (images, infotext fields) or (None, None) when stopped."""
        req, spec = r.req, r.spec
        pipe = loaded.pipe
        pipe.scheduler = loaded.scheduler  # a previous request's --sampler does not carry over
        if r.init is not None:
            from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

            auto = AutoPipelineForInpainting if r.mask is not None else AutoPipelineForImage2Image
            pipe = auto.from_pipe(pipe)  # shares the loaded components
            pipe.set_progress_bar_config(disable=True)
        from .samplers import a1111_names, make_scheduler, resolve_sampler

        if req.sampler or req.schedule:
            pipe.scheduler = make_scheduler(resolve_sampler(req.sampler, req.schedule, spec.family), pipe.scheduler)
        sampler_names = a1111_names(pipe.scheduler)

        def on_step_end(p, i, t, kwargs):
            if observer.advance(kwargs.get("latents")):
                p._interrupt = True
            return kwargs

        gens = [torch.Generator("cpu").manual_seed(s) for s in r.seeds]
        kwargs = dict(prompt=[req.prompt] * req.batch, height=r.height, width=r.width, num_inference_steps=r.steps,
                      generator=gens if len(gens) > 1 else gens[0], output_type="np", callback_on_step_end=on_step_end)
        if "latents" not in getattr(pipe, "_callback_tensor_inputs", ["latents"]):
            kwargs.pop("callback_on_step_end")
        else:
            kwargs["callback_on_step_end_tensor_inputs"] = ["latents"]
        for arg in spec.call.guidance_args:
            kwargs[arg] = r.guidance
        kwargs.update(dict(spec.call.fixed))
        negative = req.negative or spec.call.negative_default
        if negative and (spec.uses_cfg or spec.call.negative_default is not None):
            kwargs["negative_prompt"] = [negative] * req.batch
        if r.control is not None:
            kwargs.update({spec.call.control_image_arg: r.control, "controlnet_conditioning_scale": req.control_scale,
                           "control_guidance_start": req.control_start, "control_guidance_end": req.control_end})
        if r.init is not None:
            kwargs.update(image=r.init, strength=req.strength)
            if r.mask is not None:
                kwargs["mask_image"] = r.mask
        with observer, torch.no_grad():
            images = pipe(**kwargs).images
        if observer.interrupt:
            return None, None
        params = {"Steps": r.steps, "Sampler": sampler_names[0], "Schedule type": sampler_names[1],
                  "CFG scale": r.guidance}
        if r.init is not None:
            params["Denoising strength"] = req.strength
        return images, params

    def _infotexts(self, r: Resolved, plan, params: dict, images) -> list[str]:
        """A1111's `parameters` text per image: its seed, size and batch position, the LoRAs as
        `<lora:name:weight>` with their hashes, the model's short hash, and lowvram's plan."""
        from .hashes import lora_hash, model_hash
        from .infotext import GenerationRecord, LoraUse, infotext
        from .output import plan_summary

        req = r.req
        loras = tuple(LoraUse(os.path.splitext(os.path.basename(p))[0], w, lora_hash(p)) for p, w in req.loras)
        mhash = model_hash(req.model)  # None for a folder
        extra = {k: v for k, v in params.items() if k.startswith("Stage ")}
        if r.control is not None:
            from .infotext import controlnet_unit

            label = req.control_label or os.path.basename(os.path.normpath(req.controlnet))
            extra["ControlNet 0"] = controlnet_unit(label, req.control_scale, req.resize_mode, req.control_start,
                                                    req.control_end)
        out = []
        for k, arr in enumerate(images):
            batch = {"Batch size": len(images), "Batch pos": k} if len(images) > 1 else {}
            rec = GenerationRecord(
                prompt=req.prompt, steps=params["Steps"], sampler=params["Sampler"], cfg_scale=params["CFG scale"],
                seed=r.seeds[k] if k < len(r.seeds) else r.seeds[0], width=int(arr.shape[1]), height=int(arr.shape[0]),
                negative=req.negative, schedule=params.get("Schedule type", "Automatic"),
                model_name=req.model_label or r.spec.name, model_hash=mhash, loras=loras,
                denoising_strength=params.get("Denoising strength"),
                extra=tuple({**batch, **extra, "lowvram plan": plan_summary(plan)}.items()))
            out.append(infotext(rec))
        return out


def planner_for(machine, default_quality: str = "lossless", images_per_load: int = 1, step_cache: float = 0.0):
    """The Session's planner for one machine: `quality` per request, else the default; `step_cache`: the
    first-block caching threshold of every plan (0: off; only with quality fast)."""
    from ..plan import Policy, make_plan

    def plan(spec, workload, file_weights=None, quality=None):
        if images_per_load != 1 and hasattr(workload, "images_per_load"):
            workload = replace(workload, images_per_load=images_per_load)
        return make_plan(spec, workload, machine, Policy(quality or default_quality, step_cache=step_cache),
                         file_weights=file_weights)

    return plan


def _check_int(v, flag: str) -> None:
    if isinstance(v, bool) or not isinstance(v, int):
        raise UserError(f"{flag} {v!r} is not a whole number.")


def _seeds(seed, batch: int, notes: list[str]) -> list[int]:
    """A1111's seeds: -1 picks a random one (said in a note); image k of a batch uses seed + k."""
    _check_int(seed, "--seed")
    if seed == SEED_RANDOM:
        seed = secrets.randbelow(2**32)  # A1111 draws random seeds below 2**32
        notes.append(f"random seed {seed}")
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"--seed {seed} is out of range: give 0 to {MAX_SEED}, or -1 for a random seed.")
    return [seed + k for k in range(batch)]


def _output_paths(output: str, batch: int) -> list[str]:
    """The files a run will write, checked before any weight is read."""
    from .output import batch_paths, check_output

    check_output(output)
    return batch_paths(output, batch)


def _release_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc keeps them otherwise), so RSS falls after an unload."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
