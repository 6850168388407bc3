"""lowvram's own API: plans (the JSON of `lowvram plan --json`), the models with their plans on this
machine, and jobs a web page submits and follows as server-sent events (step, ETA, preview, queue)."""

from __future__ import annotations


from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..errors import UserError
from .a1111 import Img2ImgBody, Txt2ImgBody, make_job, state
from .event_stream import event_response

router = APIRouter(prefix="/lowvram/v1")

EVENT_POLL_SECONDS = 0.1  # how often an event stream looks at its job (a step takes longer on any real model)


def _spec_for(st, model: str):
    """(ModelSpec, file weights) for a listed model name or a catalogue name — never a path."""
    from ..catalogue import get_model
    from .models import UnknownName

    if not isinstance(model, str) or not model.strip():
        raise UserError("Give model=NAME: a name from /lowvram/v1/models or the catalogue (`lowvram models`).")
    try:
        served = st.registry.get(model)
    except UnknownName:
        if "/" in model or "\\" in model:
            raise UnknownName(f"The server names models only by the names it lists, not by path: {model!r} is not "
                              "one (see /lowvram/v1/models).") from None
        return get_model(model), {}
    return st.registry.architecture(served), st.registry.file_weights(served)


def _plan(st, spec, file_weights, width=None, height=None, steps=None, batch=1, quality=None, lora_bytes=(),
          guidance=True, img2img=False, controlnet_path="", estimate=False):
    """The plan of a request (checked as generate checks it). estimate: answer at once from known and
    estimated simulations where every one needed is known or estimable (plan/estimated.py; marked
    `estimated` when any is), else plan exactly as generate would. With a ControlNet the plan is exact
    (its simulations ship at the model's default size only, and its folder's facts may need a module)."""
    from ..plan import Policy, Workload, make_plan
    from ..plan.estimated import estimated_plan
    from ..contract import POLICIES
    from ..generate.request import MAX_BATCH, MAX_STEPS
    from ..units import check_count, check_resolution

    quality = quality or st.config.quality
    if quality not in POLICIES:
        raise UserError(f"Unknown quality {quality!r}: choose lossless, balanced or fast.")
    w, h = width or spec.width, height or spec.height
    check_resolution(w, h, spec.latent_factor, spec.name)
    n = spec.steps if steps is None else steps
    check_count(n, 1, MAX_STEPS, "steps", "steps")
    check_count(batch, 1, MAX_BATCH, "batch", "images")
    wl = Workload(w, h, batch, n, guidance=guidance, img2img=img2img, lora_bytes=tuple(lora_bytes),
                  controlnet=bool(controlnet_path), controlnet_path=controlnet_path)
    if estimate and not controlnet_path:  # lookups and fits only: builds no module, so needs no plan lock
        quick = estimated_plan(spec, wl, st.config.machine, Policy(quality), file_weights=file_weights)
        if quick is not None:
            return quick
    with st.plan_lock:
        return make_plan(spec, wl, st.config.machine, Policy(quality), file_weights=file_weights)


@router.get("/plan")
def plan(request: Request, model: str = "", width: int | None = None, height: int | None = None,
         steps: int | None = None, batch: int = 1, quality: str | None = None, controlnet: str = ""):
    """`controlnet`: a listed ControlNet's name, planned beside the model."""
    from .controlnet_api import planned_controlnet

    st = state(request)
    spec, fw = _spec_for(st, model)
    cn = planned_controlnet(st, model, spec, controlnet)
    return _plan(st, spec, fw, width, height, steps, batch, quality, controlnet_path=cn).to_json()


@router.get("/models")
def models(request: Request):
    """Each listed model with its plan at its default size on this machine."""
    st = state(request)
    reg = st.registry
    out = []
    for m in reg.models.values():
        row = {"name": m.name, "title": m.title, "source": m.source, "current": m.name == reg.current}
        try:
            spec = reg.architecture(m)
            p = _plan(st, spec, reg.file_weights(m))
            row.update(architecture=spec.name, family=spec.family, width=spec.width, height=spec.height, steps=spec.steps,
                       fits=p.fits, seconds_per_image=p.seconds_per_image, peak_vram_bytes=p.peak_vram_bytes,
                       peak_ram_bytes=p.peak_ram_bytes)
        except UserError as e:
            row.update(fits=False, problem=str(e))
        out.append(row)
    return out


def _submit(request: Request, body, kind: str):
    st = state(request)
    job = st.queue.submit(make_job(st, body, kind))
    return JSONResponse(_status(st, job), status_code=202)


@router.post("/txt2img")
def submit_txt2img(body: Txt2ImgBody, request: Request):
    """Queue a txt2img job and answer at once with its id; follow it at /jobs/{id}/events."""
    return _submit(request, body, "txt2img")


@router.post("/img2img")
def submit_img2img(body: Img2ImgBody, request: Request):
    return _submit(request, body, "img2img")


def _job(st, job_id: str):
    from .models import UnknownName

    job = st.queue.jobs.get(job_id)
    if job is None:
        raise UnknownName(f"There is no job {job_id!r} (finished jobs are forgotten after a while).")
    return job


def _status(st, job, preview: bool = False) -> dict:
    out = {"id": job.id, "state": job.state, "model": job.model, "kind": job.kind, "step": job.step, "steps": job.total,
           "progress": job.progress, "eta_seconds": round(job.eta(), 2), "queue_position": st.queue.position(job),
           "stage": job.stage or None}
    if job.error is not None:
        out["error"] = job.error.sentence
    if job.state == "done" and job.result is not None:
        out.update(seeds=list(job.result.seeds), infotexts=list(job.result.infotexts), saved_paths=list(job.paths),
                   seconds=round(job.result.seconds, 3), reused=job.result.reused)
    if job.result is not None:  # measured beside predicted, for the page (done or interrupted)
        res, p = job.result, job.result.plan
        out.update(run_seconds=round(res.run_seconds, 3), load_seconds=round(res.load_seconds, 3),
                   peak_vram_bytes=res.peak_vram_bytes, peak_ram_bytes=res.peak_ram_bytes, device=res.device,
                   predicted_seconds=round(p.seconds_per_image, 3) if p is not None else None,
                   predicted_peak_vram_bytes=getattr(p, "peak_vram_bytes", None),
                   predicted_peak_ram_bytes=getattr(p, "peak_ram_bytes", None))
    if preview:
        pre = job.preview()
        if pre is not None:
            out["preview_step"], out["preview"] = pre
    return out


@router.get("/jobs/{job_id}")
def job_status(job_id: str, request: Request):
    st = state(request)
    return _status(st, _job(st, job_id))


@router.get("/jobs/{job_id}/events")
async def job_events(job_id: str, request: Request):
    """Server-sent events: `progress` whenever the step, state, queue position or preview changes, then
    one `done`, `interrupted` or `failed` event, and the stream ends."""
    st = state(request)
    job = _job(st, job_id)
    sent_preview = 0  # the preview step the last event carried: a new one goes out once

    def read():
        finished, preview_step = job.done.is_set(), job._latents_step

        def data():
            nonlocal sent_preview
            with_preview, sent_preview = preview_step != sent_preview, preview_step
            return _status(st, job, preview=with_preview)

        return (job.state, job.step, st.queue.position(job), preview_step), finished, job.state, data

    return event_response(request, read, EVENT_POLL_SECONDS)
