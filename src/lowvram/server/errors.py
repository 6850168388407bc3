"""Every failure answered as A1111 does — `{"error": ..., "detail": "<one sentence>"}` — never a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import UserError

log = logging.getLogger("lowvram.server")
REASONS = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
           422: "Unprocessable Entity", 500: "Internal Server Error", 503: "Service Unavailable", 507: "Insufficient Storage"}


class JobFailed(Exception):
    """A queued job's failure, re-raised in the request that waits for it."""

    def __init__(self, status: int, sentence: str) -> None:
        super().__init__(sentence)
        self.status = status


def answer(status: int, sentence: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": REASONS.get(status, "Error"), "detail": sentence}, status_code=status, headers=headers)


def status_of(e: UserError) -> int:
    from .jobs import QueueFull
    from .models import UnknownName

    return 404 if isinstance(e, UnknownName) else 503 if isinstance(e, QueueFull) else 400


def install(app: FastAPI) -> None:
    """Register the handlers that turn each kind of failure into one sentence."""

    @app.exception_handler(UserError)
    async def user_error(request: Request, e: UserError):
        return answer(status_of(e), str(e))

    @app.exception_handler(JobFailed)
    async def job_failed(request: Request, e: JobFailed):
        return answer(e.status, str(e))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        return _validation_answer(e.errors())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        if e.status_code == 404:
            sentence = f"There is no {request.url.path} here: see /docs for the routes."
        elif e.status_code == 405:
            sentence = f"{request.method} is not allowed on {request.url.path}."
        else:
            sentence = str(e.detail)
        return answer(e.status_code, sentence, getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception):
        from .jobs import first_line

        log.exception("%s %s failed", request.method, request.url.path)
        return answer(500, f"The server failed on this request ({type(e).__name__}: {first_line(e)}).")


def _validation_answer(errors) -> JSONResponse:
    err = errors[0] if errors else {}
    if err.get("type") == "json_invalid":
        ctx = err.get("ctx") or {}
        return answer(400, f"The request body is not valid JSON ({ctx.get('error', 'parse error')}).")
    loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path")]
    where = ".".join(loc) or "the request body"
    msg = str(err.get("msg", "is invalid")).rstrip(".")
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {str(got)[:60]!r})"
    return answer(422, f"{where}: {msg}{shown}.")
