"""The FastAPI application: A1111's API and lowvram's on one Session, behind auth and a body cap."""

from __future__ import annotations

import contextlib
import threading

from fastapi import FastAPI

from .config import ServerConfig, ServerState


def create_app(config: ServerConfig) -> FastAPI:
    """The app for one GPU: its Session and worker start with the app and stop (model unloaded) with it."""
    from ..generate.session import LONG_LIVED_IMAGES_PER_LOAD, Session, planner_for
    from . import a1111, controlnet_api, errors, lowvram_api, page_api, pull_api
    from .auth import BasicAuth
    from .bodylimit import BodyLimit
    from .jobs import JobQueue
    from .pulls import Pulls

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        lock = threading.Lock()
        session = Session(_serialised(planner_for(config.machine, config.quality, LONG_LIVED_IMAGES_PER_LOAD), lock), console=None)
        queue = JobQueue(session, config.queue_size, on_done=saver(config))
        pulls = Pulls(config.machine, lock, on_pulled=lambda pull: config.registry.add_pulled())
        app.state.lowvram = ServerState(config, queue, plan_lock=lock, pulls=pulls)
        try:
            yield
        finally:
            app.state.lowvram.exact_plans.close()
            pulls.close()
            queue.close()

    app = FastAPI(title="lowvram", lifespan=lifespan,
                  description="A1111's API (/sdapi/v1) and lowvram's (/lowvram/v1) on a model kept loaded.")
    errors.install(app)
    app.include_router(a1111.router)
    app.include_router(lowvram_api.router)
    app.include_router(page_api.router)
    app.include_router(pull_api.router)
    app.include_router(controlnet_api.router)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    if config.credentials:
        app.add_middleware(BasicAuth, credentials=config.credentials)  # added last: runs first
    return app


def saver(config: ServerConfig):
    """What the worker does with a finished job's images: save them in A1111's outputs layout."""
    if not config.outputs:
        return None
    from .outputs import save_pngs

    def save(job) -> None:
        job.paths = save_pngs(config.outputs, job.kind, job.pngs(), job.result.seeds)

    return save


def _serialised(planner, lock):
    """The Session's planner under the server's plan lock (ServerState.plan_lock says why)."""

    def plan(*args, **kwargs):
        with lock:
            return planner(*args, **kwargs)

    return plan
