"""Past one machine, measured with the tiny pipelines on this machine's CPU (Ray's "GPU" a label only).

1. `lowvram batch`: images/min for the same jobs file on this machine's Session, and on Ray Data with one
   and with two workers (a local cluster declaring 1 or 2 GPUs), whole-job wall clock (worker start-up
   and model loading included, as a user waits for them).
2. Per-request overhead of Ray Serve over the plain server: the median time of one small txt2img request
   (tiny SD1.5, 64 px, 1 step, model already loaded) through `lowvram serve` (uvicorn) and through the
   Ray Serve application (proxy -> ingress -> replica), both over loopback HTTP.

Usage: PYTHONPATH=src python bench/ray_scaling.py [--lines 16] [--requests 10]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
GPU = "RTX 2060"
BODY = {"width": 64, "height": 64, "steps": 4}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def batch_rates(model: str, lines: int, tmp: str) -> dict:
    import ray

    from lowvram.batch.jobs import read_jobs
    from lowvram.batch.ray_data import ray_results
    from lowvram.batch.run import local_results, run_batch
    from lowvram.cluster.connect import connect
    from lowvram.generate.session import Session, planner_for
    from lowvram.plan.machine import resolve_run_machine
    from lowvram.server.models import discover

    jobs = os.path.join(tmp, "jobs.jsonl")
    with open(jobs, "w") as f:
        for k in range(lines):
            f.write(json.dumps(dict(BODY, prompt=f"a cat {k}", seed=k)) + "\n")
    parsed = read_jobs(jobs, discover(model, None), "lossless")
    out = {}
    session = Session(planner_for(resolve_run_machine(GPU)[0]))
    t = time.perf_counter()
    os.makedirs(os.path.join(tmp, "local"))
    run_batch(parsed, os.path.join(tmp, "local"), lambda p: local_results(session, p))
    out["this machine (no Ray)"] = lines / (time.perf_counter() - t) * 60
    session.unload()
    for gpus in (1, 2):
        ray.init(num_cpus=2, num_gpus=gpus, include_dashboard=False,
                 runtime_env={"env_vars": {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}})
        folder = os.path.join(tmp, f"ray{gpus}")
        os.makedirs(folder)
        t = time.perf_counter()
        with connect(None) as cluster:
            run_batch(parsed, folder, lambda p: ray_results(cluster, p, (GPU, None, None), "lossless"))
        out[f"Ray Data, {gpus} worker(s)"] = lines / (time.perf_counter() - t) * 60
        ray.shutdown()
    return out


def _median_request(url: str, n: int) -> float:
    import requests

    body = dict(BODY, steps=1, prompt="a cat", seed=1)
    for _ in range(2):  # load the model, plan the workload
        assert requests.post(url + "/sdapi/v1/txt2img", json=body, timeout=600).status_code == 200
    times = []
    for _ in range(n):
        t = time.perf_counter()
        r = requests.post(url + "/sdapi/v1/txt2img", json=body, timeout=600)
        times.append(time.perf_counter() - t)
        assert r.status_code == 200, r.text
    return statistics.median(times)


def request_overhead(models_dir: str, n: int, tmp: str) -> dict:
    import ray
    import uvicorn
    from ray import serve

    from lowvram.cluster.app import APP_NAME, build_app
    from lowvram.cluster.connect import Cluster
    from lowvram.plan.machine import resolve_run_machine
    from lowvram.server.app import create_app
    from lowvram.server.config import ServerConfig
    from lowvram.server.models import discover

    config = ServerConfig(discover(None, models_dir), resolve_run_machine(GPU)[0], outputs=None)
    port = _port()
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    while not server.started:
        time.sleep(0.1)
    plain = _median_request(f"http://127.0.0.1:{port}", n)
    server.should_exit = True
    th.join(60)

    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}})
    port = _port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(config, Cluster(None, 1), (GPU, None, None)), name=APP_NAME, route_prefix="/")
    served = _median_request(f"http://127.0.0.1:{port}", n)
    serve.shutdown()
    ray.shutdown()
    return {"plain server": plain, "Ray Serve": served}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=16)
    ap.add_argument("--requests", type=int, default=10)
    args = ap.parse_args()
    from tiny_pipelines import build_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("LOWVRAM_CACHE_DIR", os.path.join(tmp, "cache"))
        model = os.path.join(tmp, "models", "diffusers", "tiny-sd15")
        build_pipeline("sd15", model)
        for name, rate in batch_rates(model, args.lines, tmp).items():
            print(f"batch  {name:28s} {rate:6.1f} images/min")
        for name, s in request_overhead(os.path.join(tmp, "models"), args.requests, tmp).items():
            print(f"serve  {name:28s} {s * 1000:6.0f} ms median per request")


if __name__ == "__main__":
    main()
