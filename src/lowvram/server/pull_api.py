"""Pulling catalogue models from the page: start (or join) a pull, follow it, cancel it.

POST /lowvram/v1/pulls {"model": NAME, "gguf": null|"auto"|QUANT, "quality": null|POLICY} answers 202
with the pull's status at once; GET /lowvram/v1/pulls/{id} polls it, /events streams it as server-sent
events (as /lowvram/v1/jobs/{id}/events does for generations), POST /lowvram/v1/pulls/{id}/cancel stops
it. Without `gguf` and `quality` a pull is planned as `lowvram pull NAME --quality balanced`: a GGUF
quant for this machine only when the full weights do not fit it well. Behind the server's auth, as
every route is (server/auth.py).
"""

from __future__ import annotations


from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from ..errors import UserError
from .a1111 import state
from .event_stream import event_response

router = APIRouter(prefix="/lowvram/v1")

EVENT_POLL_SECONDS = 0.25  # how often a pull's event stream looks at its meter (a bar needs no more)


class PullBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    gguf: str | None = None
    quality: str | None = None


def _pulls(request: Request):
    pulls = getattr(state(request), "pulls", None)
    if pulls is None:
        raise UserError("This server does not pull models: run `lowvram pull NAME` on its machine.")
    return pulls


@router.post("/pulls")
def start_pull(body: PullBody, request: Request):
    """Start pulling a catalogue model into the Hugging Face cache, or join the pull of it already running."""
    pull = _pulls(request).start(body.model, body.quality, body.gguf)
    return JSONResponse(pull.status(), status_code=202)


@router.get("/pulls")
def list_pulls(request: Request) -> list[dict]:
    """Running and recently finished pulls, oldest first."""
    return [p.status() for p in list(_pulls(request).pulls.values())]


@router.get("/pulls/{pull_id}")
def pull_status(pull_id: str, request: Request) -> dict:
    return _pulls(request).get(pull_id).status()


@router.post("/pulls/{pull_id}/cancel")
def cancel_pull(pull_id: str, request: Request) -> dict:
    """Stop a pull at its next chunk; the files it finished stay in the cache, so the next pull skips them."""
    return _pulls(request).cancel(pull_id).status()


@router.get("/pulls/{pull_id}/events")
async def pull_events(pull_id: str, request: Request):
    """Server-sent events: `progress` whenever the bytes, files or state change, then one `done`,
    `failed` or `cancelled` event, and the stream ends."""
    pull = _pulls(request).get(pull_id)

    def read():
        data = pull.status()
        return ((data["state"], data["bytes_done"], data["files_done"], data["bytes_total"]), pull.done.is_set(),
                data["state"], lambda: data)

    return event_response(request, read, EVENT_POLL_SECONDS)
