"""`lowvram serve --ray`: the server's A1111 and lowvram APIs as a Ray Serve application.

One deployment per GPU in the cluster (`lowvram-gpu-K`, one replica each, `num_gpus=1`), so each card
is addressable and runs its own plan; Ray Serve starts, health-checks and restarts them. The ingress
is a Serve deployment with the server's FastAPI routers unchanged (plus /lowvram/v1/cluster), whose
queue (cluster/queue.py) routes each job to a replica by the plans.
"""

from __future__ import annotations

from fastapi import Request  # at module level: FastAPI resolves the routes' string annotations here

INGRESS = "lowvram-ingress"
APP_NAME = "lowvram"
# How long a replica may take to answer Serve's health check while it loads a model: loading runs in
# a thread, but a large checkpoint on a loaded machine can hold the GIL for long stretches.
HEALTH_CHECK_TIMEOUT_S = 120


def replica_name(k: int) -> str:
    return f"lowvram-gpu-{k}"


def build_app(config, cluster, machine_flags: tuple):
    """The Serve application for `cluster` (connect.Cluster): replicas and ingress, bound, not yet run."""
    from fastapi import FastAPI
    from ray import serve

    from ..server import a1111, controlnet_api, errors, lowvram_api
    from ..server.app import saver
    from ..server.auth import BasicAuth
    from ..server.bodylimit import BodyLimit
    from ..server.config import ServerState
    from .queue import ClusterQueue
    from .replica import Replica

    n, gpus_each = cluster.workers()
    reg = config.registry
    models = list(reg.models.values())
    replica_cls = serve.deployment(Replica, num_replicas=1, health_check_timeout_s=HEALTH_CHECK_TIMEOUT_S,
                                   ray_actor_options={"num_gpus": gpus_each, "num_cpus": 1},
                                   max_ongoing_requests=8)
    replicas = [replica_cls.options(name=replica_name(k)).bind(replica_name(k), models, machine_flags, config.quality)
                for k in range(n)]

    app = FastAPI(title="lowvram (Ray Serve)",
                  description="A1111's API (/sdapi/v1) and lowvram's (/lowvram/v1) over a Ray cluster's GPUs.")
    errors.install(app)
    app.include_router(a1111.router)
    app.include_router(lowvram_api.router)
    app.include_router(controlnet_api.router)  # the ingress resolves units; replicas get the folder and image

    @app.get("/lowvram/v1/cluster")
    async def cluster_view(request: Request):
        """Each replica: card, RAM, loaded model, queue length and its plan for each model."""
        return {"replicas": await request.app.state.lowvram.queue.cluster()}

    @app.middleware("http")
    async def ingress_state(request: Request, call_next):
        """The routers read `app.state.lowvram`; here it lives on the ingress instance (Serve rebuilds the
        app in the replica from a pickle, so the constructor cannot reach that app object)."""
        request.app.state.lowvram = serve.get_replica_context().servable_object.state
        return await call_next(request)

    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    if config.credentials:
        app.add_middleware(BasicAuth, credentials=config.credentials)

    @serve.deployment(name=INGRESS, num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
    @serve.ingress(app)
    class Ingress:
        async def __init__(self, names: list, handles: list) -> None:
            """Ready once every replica has reported its card, RAM and plans (routing needs them)."""
            queue = ClusterQueue(dict(zip(names, handles)), reg, config.quality, config.queue_size,
                                 on_done=saver(config))
            await queue.start()
            self.state = ServerState(config, queue)

    return Ingress.bind([replica_name(k) for k in range(n)], replicas)


def run(config, cluster, machine_flags: tuple, host: str, port: int) -> None:
    """Start the application on the cluster and serve until Ctrl-C; then remove it."""
    import time

    from ray import serve

    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(config, cluster, machine_flags), name=APP_NAME, route_prefix="/")
    try:
        while True:
            time.sleep(1)
    finally:
        serve.delete(APP_NAME)
