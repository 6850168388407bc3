"""One server-sent-event loop for everything the page watches (generation jobs, pulls).

Both poll an object a worker thread updates: the stream sends `progress` when what it shows changes, its
final state once, and a comment line while nothing changes so proxies keep the connection open.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Callable

from fastapi import Request
from fastapi.responses import StreamingResponse

KEEPALIVE_SECONDS = 15.0  # a comment line this often keeps proxies from closing a quiet stream


def event_response(request: Request, read: Callable, poll_seconds: float) -> StreamingResponse:
    """The stream of `read()` -> (key, finished, state, data): an event whenever `key` changes (`data()`
    builds its JSON only then), `state` as the last event once `finished`."""
    return StreamingResponse(_events(request, read, poll_seconds), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _events(request: Request, read: Callable, poll_seconds: float):
    last, quiet_since = object(), time.monotonic()
    while True:
        key, finished, state, data = read()
        if key != last or finished:
            last, quiet_since = key, time.monotonic()
            yield f"event: {state if finished else 'progress'}\ndata: {json.dumps(data())}\n\n"
            if finished:
                return
        elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        if await request.is_disconnected():
            return
        await asyncio.sleep(poll_seconds)
