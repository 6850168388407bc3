"""The web page of `lowvram serve` (`/`) and the few routes it needs beside the JSON APIs.

The page is one static HTML file with plain JavaScript and CSS (server/static/), no framework and no
build step. Gradio, the UI library A1111 and Forge use, would add well over 100 MB of dependencies
and a second queue and event system beside ours, while the page needs only forms, fetch, an
EventSource (our /lowvram/v1/jobs/{id}/events stream), a canvas for the inpaint mask and an image
grid — all of which a browser has.

Routes here: the page and its two assets; `/lowvram/v1/catalogue` (every architecture, installed or not, with
what its Pull button would fetch for this machine; the pulls themselves are in pull_api.py); `/lowvram/v1/readout` (the plan of what the form asks for,
with LoRAs by the server's names, and the other quality policies' plans summed up as alternatives);
`/lowvram/v1/gallery` (this server's saved outputs with their A1111 infotext) and
`/lowvram/v1/outputs/{name}` (one of them — looked up by a name from that listing, never a path).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from .a1111 import state

router = APIRouter()

STATIC_PACKAGE = "lowvram.server"
STATIC_DIR = "static"
# The page's files and their media types: the only names /static/ serves.
ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
GALLERY_LIMIT = 200  # newest images listed; reading each one's infotext costs a PNG header read
NO_CACHE = {"Cache-Control": "no-cache"}  # the page changes with the package; let browsers revalidate


def _asset(name: str) -> str:
    return resources.files(STATIC_PACKAGE).joinpath(STATIC_DIR, name).read_text(encoding="utf-8")


@router.get("/", include_in_schema=False)
def page() -> HTMLResponse:
    return HTMLResponse(_asset("index.html"), headers=NO_CACHE)


@router.get("/static/{name}", include_in_schema=False)
def asset(name: str) -> Response:
    from .models import UnknownName

    if name not in ASSETS:
        raise UnknownName(f"There is no page file {name!r}.")
    return Response(_asset(name), media_type=ASSETS[name], headers=NO_CACHE)


# -- the plan readout ---------------------------------------------------------------------------------
@router.get("/lowvram/v1/readout")
def readout(request: Request, model: str = "", width: int | None = None, height: int | None = None,
            steps: int | None = None, batch: int = 1, quality: str | None = None, guidance: float | None = None,
            loras: str = "", img2img: bool = False, controlnet: str = "") -> dict:
    """The plan of the page's form as it stands (`loras`: the server's LoRA names, comma-separated;
    `controlnet`: a ControlNet's listed name), and
    the other quality policies that would be faster, each as one line ("balanced: fp8 transformer,
    2.4x faster, lossy"). A size never simulated is answered at once from estimates (`estimated`: true,
    plan/estimated.py) while the exact plans run in the background (`exact`: "pending", then "done" or
    "failed"); asked again, the readout is exact once they are in."""
    from ..checkpoints.lora_size import lora_file_bytes
    from ..plan.alternatives import alternatives
    from ..contract import POLICIES
    from .controlnet_api import planned_controlnet
    from .lowvram_api import _plan, _spec_for

    st = state(request)
    spec, fw = _spec_for(st, model)
    names = [n.strip() for n in loras.split(",") if n.strip()]
    lora_bytes = tuple(lora_file_bytes(st.registry.lora(n)) for n in names)
    cfg = guidance is None or guidance > 1  # guidance <= 1 turns classifier-free guidance off, as in generate
    extra = dict(lora_bytes=lora_bytes, guidance=cfg, img2img=img2img,
                 controlnet_path=planned_controlnet(st, model, spec, controlnet))
    args = (st, spec, fw, width, height, steps, batch)

    def answer() -> tuple[dict, object]:
        current = _plan(*args, quality, estimate=True, **extra)
        others = [_plan(*args, q, estimate=True, **extra) for q in POLICIES if q != current.policy]
        return ({"plan": current.to_json(), "alternatives": [a.to_json() for a in alternatives(current, others)],
                 "estimated": any(p.estimated for p in [current, *others])}, current.workload)

    out, workload = answer()
    if out["estimated"]:
        # the exact plans of every policy, in the background: their simulations land in the cache, and the
        # page's next readout of this form (it asks again while `exact` is "pending") is exact
        key = (repr(spec), repr(sorted(fw.items())), workload)  # a spec holds dicts: keyed by its repr

        def exact() -> None:
            for q in POLICIES:
                _plan(*args, q, **extra)

        state_now = st.exact_plans.request(key, exact)
        if state_now == "done":
            # they finished while this answer was being estimated: the page stops asking once it reads
            # "done", so answer from them now rather than leave it an estimate
            out = {**answer()[0], "exact": state_now}
        else:
            out["exact"] = state_now
        if out["exact"] == "failed":
            out["exact_error"] = st.exact_plans.error(key)
    return out


# -- the catalogue ---------------------------------------------------------------------------------------
@router.get("/lowvram/v1/catalogue")
def catalogue(request: Request) -> list[dict]:
    """Every catalogue architecture with its install state here: the page plans any of them (will Flux fit
    this card?) and says how to get the ones this server cannot run yet."""
    from ..catalogue import MODELS
    from ..hub import installed

    st = state(request)
    pulled: dict[str, list[str]] = {}
    for row in installed():
        pulled.setdefault(row.name, []).append(row.variant)
    served = {row.name for row in st.registry.models.values()}
    pulls = getattr(st, "pulls", None)
    out = []
    for m in MODELS.values():
        running = pulls.running(m.name) if pulls is not None else None
        out.append({"name": m.name, "title": m.title, "family": m.family, "width": m.width, "height": m.height,
                    "steps": m.steps, "installed": pulled.get(m.name, []), "served": m.name in served,
                    "pull": _pull_choice(st, m), "pulling": running.status() if running is not None else None})
    return out


def _pull_choice(st, spec) -> dict | None:
    """What the page's Pull button fetches for this machine, as `lowvram pull NAME --quality balanced` would
    choose it: the full weights, or a GGUF quant when they do not fit well (or the sentence why neither)."""
    from ..errors import UserError

    pulls = getattr(st, "pulls", None)
    if pulls is None:
        return None
    try:
        order = pulls.order(spec.name)
    except UserError as e:
        return {"problem": str(e)}
    return {"weights": order.weights, "reason": order.choice.reason, "command": order.command()}


# -- the gallery ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SavedImage:
    name: str  # "txt2img-images/2025-01-31/00003-42.png": the key clients use, relative to --outputs
    path: str
    mtime: float


def saved_images(root: str | None) -> list[SavedImage]:
    """This server's outputs (A1111's layout, server/outputs.py), newest first, at most GALLERY_LIMIT."""
    from .outputs import FOLDERS

    if not root or not os.path.isdir(root):
        return []
    found = []
    for folder in FOLDERS.values():
        base = os.path.join(root, folder)
        if not os.path.isdir(base):
            continue
        for day in os.listdir(base):
            day_dir = os.path.join(base, day)
            if not os.path.isdir(day_dir):
                continue
            for f in os.listdir(day_dir):
                path = os.path.join(day_dir, f)
                if f.endswith(".png") and not f.startswith(".") and os.path.isfile(path):
                    found.append(SavedImage(f"{folder}/{day}/{f}", path, os.path.getmtime(path)))
    found.sort(key=lambda s: (s.mtime, s.name), reverse=True)
    return found[:GALLERY_LIMIT]


def _describe(item: SavedImage) -> dict:
    from PIL import Image, UnidentifiedImageError

    from .pnginfo import parse_infotext

    row = {"name": item.name, "kind": item.name.split("-images/")[0], "mtime": item.mtime, "infotext": "",
           "parameters": {}}
    try:
        with Image.open(item.path) as im:
            row["width"], row["height"] = im.size
            # The chunks before the pixels, as generate.output.read_infotext reads them: the server writes
            # `parameters` there. (PIL's `im.text` would decode every pixel to find chunks after them.)
            text = im.info.get("parameters", "")
    except (OSError, UnidentifiedImageError):
        return row  # a file being written or damaged: listed, without parameters
    row["infotext"], row["parameters"] = text, parse_infotext(text) if text else {}
    return row


@router.get("/lowvram/v1/gallery")
def gallery(request: Request) -> list[dict]:
    """The images this server saved, newest first, each with its infotext parsed into fields."""
    return [_describe(s) for s in saved_images(state(request).config.outputs)]


@router.get("/lowvram/v1/outputs/{name:path}")
def output_file(name: str, request: Request, download: bool = False):
    """One saved image, by a name from /lowvram/v1/gallery only: the name is looked up, never opened as a path."""
    from .models import UnknownName

    found = {s.name: s.path for s in saved_images(state(request).config.outputs)}
    if name not in found:
        raise UnknownName(f"There is no saved image named {name!r}: use a name from /lowvram/v1/gallery.")
    filename = os.path.basename(found[name]) if download else None
    return FileResponse(found[name], media_type="image/png", filename=filename)

