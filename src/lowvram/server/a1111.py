"""A1111's HTTP API (`/sdapi/v1/...`), as its clients (Open WebUI, SillyTavern, webuiapi) call it.

Request models carry A1111's field names and ignore the fields lowvram has no use for (hires fix,
scripts, face restoration...), as A1111 ignores what it does not know. Sizes, steps and guidance the
client leaves out take the model's defaults (A1111 would use 512x512 and CFG 7, wrong for SDXL or
Flux); every value is held to the CLI's bounds. Images go out as base64 PNGs carrying their infotext.
"""

from __future__ import annotations

import json
import re
import time

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from ..errors import UserError
from ..generate.request import MAX_SEED, GenerateRequest
from ..generate.request import MAX_BATCH, MAX_GUIDANCE, MAX_STEPS
from ..units import MAX_SIDE_PIXELS
from .controlnet_api import control_unit
from .jobs import Job, wait_for

router = APIRouter(prefix="/sdapi/v1")

# `<lora:NAME:WEIGHT>` in a prompt (A1111's extra-networks syntax; a second number, the text-encoder
# weight in some forks, is ignored).
LORA_TAG = re.compile(r"<lora:([^:>]+)(?::([^:>]*))?(?::[^>]*)?>")
AUTOMATIC = "automatic"
VERSION = "lowvram"  # what info.version says: the clients that read it only show it


class Txt2ImgBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = Field(-1, ge=-1, le=MAX_SEED)
    sampler_name: str | None = None
    sampler_index: str | None = None  # A1111's old name for sampler_name
    scheduler: str | None = None
    batch_size: int = Field(1, ge=1, le=MAX_BATCH)
    n_iter: int = Field(1, ge=1, le=MAX_BATCH)
    steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    cfg_scale: float | None = Field(None, ge=0, le=MAX_GUIDANCE)
    width: int | None = Field(None, ge=8, le=MAX_SIDE_PIXELS)
    height: int | None = Field(None, ge=8, le=MAX_SIDE_PIXELS)
    override_settings: dict = Field(default_factory=dict)
    send_images: bool = True
    quality: str | None = None  # lowvram's: lossless / balanced / fast for this request (None: the server's)
    alwayson_scripts: dict = Field(default_factory=dict)  # only "controlnet" runs (server/controlnet_api.py)


class Img2ImgBody(Txt2ImgBody):
    init_images: list[str] = Field(default_factory=list)
    mask: str | None = None
    denoising_strength: float = Field(0.75, gt=0, le=1)
    resize_mode: int = Field(0, ge=0, le=2)
    inpainting_mask_invert: int = Field(0, ge=0, le=1)


class OptionsBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    sd_model_checkpoint: str | None = None


class PngInfoBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    image: str = ""


def state(request: Request):
    return request.app.state.lowvram


# -- building a job from a body --------------------------------------------------------------------
def make_job(st, body: Txt2ImgBody, kind: str) -> Job:
    """Check a body and turn it into a queued-to-be Job: the model by a listed name only, LoRAs by
    listed names, images decoded under the pixel cap."""
    req, spec = body_request(st.registry, body, kind, st.config.quality)
    total = max(1, min(req.steps, int(req.steps * req.strength))) if req.init_image is not None else req.steps
    return Job(req, kind, req.model_label, total, spec.family)


def body_request(reg, body: Txt2ImgBody, kind: str, quality: str | None) -> tuple[GenerateRequest, object]:
    """An A1111 body as the Session's request (and the model's catalogue spec), with the server's names
    resolved by `reg`: shared by the server's queue, `lowvram batch` and the Ray replicas."""
    from ..generate import inputs
    from .images import decode_image

    from ..contract import POLICIES

    if body.quality is not None and body.quality not in POLICIES:
        raise UserError(f"Unknown quality {body.quality!r}: choose lossless, balanced or fast.")
    wanted = body.override_settings.get("sd_model_checkpoint") if isinstance(body.override_settings, dict) else None
    served = reg.get(wanted)
    spec = reg.architecture(served)
    prompt, loras = _loras(body.prompt, reg)
    batch = body.batch_size * body.n_iter
    if batch > MAX_BATCH:
        raise UserError(f"batch_size x n_iter is {batch}, more than {MAX_BATCH} images per request: ask for fewer.")
    init = mask = None
    strength, resize = 0.75, 1
    width, height = body.width, body.height
    if kind == "img2img":
        if not body.init_images:
            raise UserError("img2img needs init_images: send one base64-encoded image.")
        init = decode_image(body.init_images[0], "init image")
        if body.mask:
            from PIL import ImageOps

            mask = decode_image(body.mask, "mask").convert("L")
            if body.inpainting_mask_invert:
                mask = ImageOps.invert(mask)
        strength, resize = body.denoising_strength, body.resize_mode
        if width is None and height is None:
            width, height = inputs.size_from_image(init, spec.latent_factor)
    width = spec.width if width is None else width
    height = spec.height if height is None else height
    steps = spec.steps if body.steps is None else body.steps
    req = GenerateRequest(prompt=prompt, model=served.path, negative=body.negative_prompt, width=width, height=height,
                          steps=steps, guidance=body.cfg_scale, seed=body.seed, batch=batch, output=None, quiet=True,
                          init_image=init, strength=strength, mask=mask, config=reg.config_for(served), loras=loras,
                          models_dir=served.models_dir, quality=body.quality or quality, resize_mode=resize,
                          model_label=served.name)
    _set_sampler(req, body.sampler_name or body.sampler_index, body.scheduler, spec.family)
    control = control_unit(body.alwayson_scripts, reg, served, kind)
    if control is not None:
        req.controlnet, req.control_image, req.control_scale = control.path, control.image, control.weight
        req.control_start, req.control_end, req.control_label = control.start, control.end, control.title
        req.resize_mode = control.resize_mode  # txt2img only: the control image is the one image it resizes
    return req, spec


def _loras(prompt: str, reg) -> tuple[str, list]:
    """The prompt without its `<lora:...>` tags, and the LoRAs they name (by the server's names)."""
    loras = []
    for name, weight in LORA_TAG.findall(prompt):
        try:
            w = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise UserError(f"The LoRA weight {weight!r} in <lora:{name}:{weight}> is not a number.") from None
        loras.append((reg.lora(name.strip()), w))
    return LORA_TAG.sub("", prompt).strip(), loras


def _set_sampler(req: GenerateRequest, sampler: str | None, scheduler: str | None, family: str) -> None:
    """A1111's sampler and schedule type onto the request ("Automatic": the sampler's default).

    A sampler of the other kind (A1111 clients send "Euler a" by default, which a flow-matching model such
    as Flux cannot run) falls back to the model's own sampler, as Forge does; the image's infotext then
    names the sampler that ran. An unknown name is still refused with one sentence."""
    from ..generate.samplers import SAMPLERS, resolve_sampler

    req.sampler = sampler or None
    sched = (scheduler or "").strip()
    req.schedule = None if not sched or sched.lower() == AUTOMATIC else sched
    if req.sampler is None:
        return
    try:
        resolve_sampler(req.sampler, req.schedule, family)
    except UserError:
        key = req.sampler.strip().lower()
        if not any(key == s.name.lower() or key in (a.lower() for a in s.aliases) for s in SAMPLERS):
            raise
        req.sampler, req.schedule = None, None  # a known sampler this model cannot run: the model's own


# -- answers ----------------------------------------------------------------------------------------
def job_response(job: Job, body: BaseModel) -> dict:
    """A finished job as A1111 answers txt2img / img2img (errors are raised before this is called)."""
    from .images import encode_b64
    from .pnginfo import parse_infotext

    res = job.result
    images = [encode_b64(png) for png in job.pngs()]
    first = parse_infotext(res.infotexts[0]) if res.infotexts else {}
    req = job.req
    width = int(res.images[0].shape[1]) if res.images else req.width
    height = int(res.images[0].shape[0]) if res.images else req.height
    info = {
        "prompt": req.prompt, "all_prompts": [req.prompt] * len(images), "negative_prompt": req.negative,
        "all_negative_prompts": [req.negative] * len(images), "seed": res.seeds[0] if res.seeds else None,
        "all_seeds": list(res.seeds), "subseed": -1, "all_subseeds": [-1] * len(images), "subseed_strength": 0,
        "width": width, "height": height, "sampler_name": first.get("Sampler"), "scheduler": first.get("Schedule type"),
        "cfg_scale": first.get("CFG scale"), "steps": first.get("Steps", req.steps), "batch_size": req.batch,
        "restore_faces": False, "sd_model_name": job.model, "sd_model_hash": None,
        "denoising_strength": req.strength if job.kind == "img2img" else None, "extra_generation_params": {},
        "index_of_first_image": 0, "infotexts": list(res.infotexts), "styles": [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.created)), "clip_skip": 1,
        "is_using_inpainting_conditioning": False, "version": VERSION, "saved_paths": list(job.paths),
        # lowvram's own: the Session's time for this request (planning, loading if any, denoising, decoding)
        "lowvram": {"seconds": round(res.seconds, 4), "load_seconds": round(res.load_seconds, 4),
                    "run_seconds": round(res.run_seconds, 4), "reused": res.reused, "device": res.device},
    }
    if res.interrupted_at is not None:
        info["interrupted_at_step"] = res.interrupted_at
    params = body.model_dump()
    params.pop("init_images", None)  # A1111 answers img2img with init_images: None
    return {"images": images if getattr(body, "send_images", True) else [], "parameters": params,
            "info": json.dumps(info)}


def raise_job_error(job: Job) -> None:
    from .errors import JobFailed

    if job.error is not None:
        raise JobFailed(job.error.status, job.error.sentence)


async def _generate(request: Request, body: Txt2ImgBody, kind: str) -> dict:
    from starlette.concurrency import run_in_threadpool

    st = state(request)
    job = await run_in_threadpool(make_job, st, body, kind)  # reads headers and decodes images: off the loop
    st.queue.submit(job)
    await wait_for(job)
    raise_job_error(job)
    return await run_in_threadpool(job_response, job, body)


@router.post("/txt2img")
async def txt2img(body: Txt2ImgBody, request: Request):
    return await _generate(request, body, "txt2img")


@router.post("/img2img")
async def img2img(body: Img2ImgBody, request: Request):
    return await _generate(request, body, "img2img")


@router.get("/progress")
def progress(request: Request, skip_current_image: bool = False):
    st = state(request)
    q = st.queue
    job = q.current
    count = q.queued() + (job is not None)
    if job is None:
        return {"progress": 0.0, "eta_relative": 0.0, "current_image": None, "textinfo": None,
                "state": {"skipped": False, "interrupted": False, "job": "", "job_count": 0, "job_timestamp": "0",
                          "job_no": 0, "sampling_step": 0, "sampling_steps": 0}}
    image = None
    if not skip_current_image:
        pre = job.preview()
        if pre is not None:
            image = pre[1]
    return {"progress": job.progress, "eta_relative": job.eta(), "current_image": image, "textinfo": job.stage or None,
            "state": {"skipped": False, "interrupted": job.interrupt, "job": f"{job.kind}({job.id})", "job_count": count,
                      "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.created)), "job_no": 0,
                      "sampling_step": job.step, "sampling_steps": job.total}}


@router.post("/interrupt")
def interrupt(request: Request):
    state(request).queue.interrupt()
    return {}


@router.post("/skip")
def skip(request: Request):
    state(request).queue.interrupt()  # one image per job here: skipping it is stopping it
    return {}


@router.get("/options")
def get_options(request: Request):
    st = state(request)
    reg = st.registry
    current = reg.models.get(reg.current) if reg.current else None
    return {"sd_model_checkpoint": current.title if current else None,
            "sd_checkpoint_hash": None, "sd_vae": "Automatic", "samples_format": "png",
            "outdir_samples": st.config.outputs or "", "CLIP_stop_at_last_layers": 1, "eta_noise_seed_delta": 0}


@router.post("/options")
def set_options(body: OptionsBody, request: Request):
    if body.sd_model_checkpoint:
        state(request).registry.switch(body.sd_model_checkpoint)  # the next request loads it (after those queued)
    return None


@router.get("/sd-models")
def sd_models(request: Request):
    return [m.a1111() for m in state(request).registry.models.values()]


@router.post("/refresh-checkpoints")
def refresh_checkpoints():
    return None  # the list is read at start; restart the server to add models


@router.get("/samplers")
def samplers():
    from ..generate.samplers import SAMPLERS

    seen, out = set(), []
    for s in SAMPLERS:
        if s.name not in seen:
            seen.add(s.name)
            out.append({"name": s.name, "aliases": list(s.aliases), "options": dict(s.options)})
    return out


@router.get("/schedulers")
def schedulers():
    from ..generate.samplers import SCHEDULES

    return [{"name": s.name, "label": s.label, "aliases": list(s.aliases) or None, "default_rho": s.default_rho,
             "need_inner_model": s.need_inner_model} for s in SCHEDULES]


@router.get("/upscalers")
def upscalers():
    return [{"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": 1}]


@router.get("/latent-upscale-modes")
def latent_upscale_modes():
    return []  # no hires fix here


@router.get("/sd-vae")
def sd_vae():
    return []  # each model's own VAE


@router.get("/sd-modules")
def sd_modules():
    return []


@router.get("/loras")
def loras(request: Request):
    import os

    return [{"name": name, "alias": name, "path": os.path.basename(path), "metadata": {}}
            for name, path in state(request).registry.loras.items()]


@router.get("/scripts")
def scripts():
    from .controlnet_api import SCRIPT_NAME

    return {"txt2img": [SCRIPT_NAME], "img2img": []}  # ControlNet, txt2img only (server/controlnet_api.py)


@router.get("/cmd-flags")
def cmd_flags(request: Request):
    return {"api": True, "nowebui": True, "listen": False}


@router.post("/png-info")
def png_info(body: PngInfoBody):
    from .images import decode_image, png_text
    from .pnginfo import parse_infotext

    im = decode_image(body.image, "image")
    items = png_text(im)
    text = items.pop("parameters", "")
    return {"info": text, "items": items, "parameters": parse_infotext(text) if text else {}}


@router.get("/memory")
def memory():
    import psutil

    vm = psutil.virtual_memory()
    ram = {"free": vm.available, "used": vm.total - vm.available, "total": vm.total}
    try:
        import torch

        if not torch.cuda.is_available():
            return {"ram": ram, "cuda": {"error": "no CUDA device"}}
        free, total = torch.cuda.mem_get_info()
        stats = torch.cuda.memory_stats()
        return {"ram": ram, "cuda": {
            "system": {"free": free, "used": total - free, "total": total},
            "active": {"current": stats.get("active_bytes.all.current", 0), "peak": stats.get("active_bytes.all.peak", 0)},
            "allocated": {"current": stats.get("allocated_bytes.all.current", 0),
                          "peak": stats.get("allocated_bytes.all.peak", 0)},
            "reserved": {"current": stats.get("reserved_bytes.all.current", 0),
                         "peak": stats.get("reserved_bytes.all.peak", 0)},
            "inactive": {"current": stats.get("inactive_split_bytes.all.current", 0),
                         "peak": stats.get("inactive_split_bytes.all.peak", 0)},
            "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)}}}
    except RuntimeError as e:
        return {"ram": ram, "cuda": {"error": str(e).splitlines()[0]}}
