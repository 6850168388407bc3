"""Past one machine, on a local Ray cluster the tests start: two declared GPUs (CPU-only torch treats
Ray's "GPU" as a label), so two workers / replicas run, each on the CPU, with tiny random-weight SD1.5.

`lowvram batch --ray` on Ray Data: completes, resumes, and writes the images the single-machine run
writes. The cluster is shut down at the end and no Ray process is left."""

import json
import os

import psutil
import pytest
import torch
from cli_inproc import pngs, run_cli
from lowvram_serve import GPU, free_port
from tiny_pipelines import build_pipeline

ray = pytest.importorskip("ray", reason='Ray is not installed: pip install -e ".[ray]" to run the cluster tests')
# A local cluster, Ray Data's actor pool and Serve start in 1-2 min on 2 busy cores: more than the suite's
# default 300 s per test must be allowed for the batch test (its two runs each start workers).
pytestmark = pytest.mark.timeout(900)


SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
SMALL = {"width": 64, "height": 64, "steps": 2}
CARD = "CPU"  # what each replica reports on a machine without CUDA: it plans for (and runs on) the CPU
RAY_EXIT_TIMEOUT_S = 60
JOBS = [dict(SMALL, prompt=f"a cat number {k}", seed=100 + k) for k in range(3)] + [
    dict(SMALL, prompt="two dogs", seed=7, batch_size=2)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray cluster with 2 CPUs and 2 'GPUs'; every process it started is gone afterwards. Its
    workers import this tree's lowvram, use the tests' plan cache (conftest.py) and one thread each."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    env = {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1",
           "LOWVRAM_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "lowvram-cache")}
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, configure_logging=False, runtime_env={"env_vars": env})
    started = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    try:
        yield
    finally:
        ray.shutdown()
        _, alive = psutil.wait_procs(started, timeout=RAY_EXIT_TIMEOUT_S)
        assert not alive, f"Ray processes left behind: {[p.pid for p in alive]}"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray") / "tiny-sd15"
    build_pipeline("sd15", str(folder))
    return str(folder)


@pytest.fixture
def one_thread():
    """This process computes as the workers do: CPU float sums depend on the thread count (1/255 on a pixel)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_batch_on_ray_resumes_and_matches_the_single_machine_run(cluster, model, tmp_path, monkeypatch, capsys,
                                                                 one_thread):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps(j) + "\n" for j in JOBS))
    # Half the lines made earlier (here: by the single-machine command on the first 2 lines).
    head = tmp_path / "head.jsonl"
    head.write_text("".join(json.dumps(j) + "\n" for j in JOBS[:2]))
    code, _, err = run_cli(monkeypatch, capsys, "batch", str(head), "--out", str(tmp_path / "ray"), "--model", model,
                           "--gpu", GPU, "--quiet")
    assert code == 0, err
    code, out, err = run_cli(monkeypatch, capsys, "batch", str(jobs), "--out", str(tmp_path / "ray"), "--model", model,
                             "--gpu", GPU, "--ray")
    assert code == 0, err
    assert "2 of 4 lines already in" in err and "3 images written" in out, (out, err)
    assert [line.split("  ")[0] for line in err.splitlines() if "images/min" in line][-1] == "5/5 images"
    code, _, err = run_cli(monkeypatch, capsys, "batch", str(jobs), "--out", str(tmp_path / "local"), "--model", model,
                           "--gpu", GPU, "--quiet")
    assert code == 0, err
    ray_pngs, local_pngs = pngs(tmp_path / "ray"), pngs(tmp_path / "local")
    assert list(ray_pngs) == ["00001-100.png", "00002-101.png", "00003-102.png", "00004-7.png", "00004-8.png"]
    assert ray_pngs == local_pngs


# -- lowvram serve --ray ------------------------------------------------------------------------------
SERVE_TIMEOUT_S = 240  # replicas import torch + diffusers and plan every model on a loaded 2-core machine


@pytest.fixture(scope="module")
def served(cluster, tmp_path_factory):
    """The Ray Serve application on the test cluster: two replicas (one per declared GPU), two models."""
    from ray import serve

    from lowvram.cluster.app import APP_NAME, build_app
    from lowvram.cluster.connect import Cluster
    from lowvram.plan.machine import resolve_run_machine
    from lowvram.server.config import ServerConfig
    from lowvram.server.models import discover

    root = tmp_path_factory.mktemp("serve-ray")
    for name in ("tiny-a", "tiny-b"):
        build_pipeline("sd15", str(root / "models" / "diffusers" / name))
    registry = discover(None, str(root / "models"))
    config = ServerConfig(registry, resolve_run_machine(GPU)[0], outputs=str(root / "outputs"))
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(config, Cluster(None, 2), (GPU, None, None)), name=APP_NAME, route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def _post(url, body, timeout=SERVE_TIMEOUT_S):
    import requests

    return requests.post(url + "/sdapi/v1/txt2img", json=body, timeout=timeout)


def _cluster(url) -> dict:
    import requests

    r = requests.get(url + "/lowvram/v1/cluster", timeout=SERVE_TIMEOUT_S)
    assert r.status_code == 200, r.text
    return {x["replica"]: x for x in r.json()["replicas"]}


def _served(url) -> dict:
    return {name: x["served"] for name, x in _cluster(url).items()}


def test_cluster_view_and_concurrent_requests_spread_over_both_replicas(served):
    from concurrent.futures import ThreadPoolExecutor

    view = _cluster(served)
    assert sorted(view) == ["lowvram-gpu-0", "lowvram-gpu-1"]
    for x in view.values():
        assert x["card"] == CARD and x["ram_bytes"] > 0 and x["queue_length"] == 0 and x["state"] == "idle"
        assert set(x["plans"]) == {"tiny-a", "tiny-b"} and x["plans"]["tiny-a"]["fits"]
    body = dict(SMALL, prompt="a cat", seed=1, override_settings={"sd_model_checkpoint": "tiny-a"})
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda s: _post(served, dict(body, seed=s)), (1, 2)))
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    assert [json.loads(r.json()["info"])["seed"] for r in answers] == [1, 2]
    assert _served(served) == {"lowvram-gpu-0": 1, "lowvram-gpu-1": 1}
    assert {x["loaded_model"] for x in _cluster(served).values()} == {"tiny-a"}


def test_a_loaded_model_goes_to_the_replica_that_has_it(served):
    before = _served(served)
    r = _post(served, dict(SMALL, prompt="a dog", seed=3, override_settings={"sd_model_checkpoint": "tiny-b"}))
    assert r.status_code == 200, r.text
    after = _served(served)
    (holder,) = [n for n in after if after[n] == before[n] + 1]
    assert _cluster(served)[holder]["loaded_model"] == "tiny-b"
    for seed in (4, 5):  # the other replica is free too, but would have to load tiny-b
        r = _post(served, dict(SMALL, prompt="a dog", seed=seed, override_settings={"sd_model_checkpoint": "tiny-b"}))
        assert r.status_code == 200, r.text
    final = _served(served)
    assert final[holder] == after[holder] + 2 and sum(final.values()) == sum(after.values()) + 2


def test_a_replica_killed_mid_request_does_not_lose_it(served):
    """ray.kill the replica running a request: the request runs again on the other, the client gets its
    image, and Ray Serve brings the killed replica back."""
    import threading
    import time

    answer = {}
    body = dict(SMALL, steps=40, prompt="a slow cat", seed=9, override_settings={"sd_model_checkpoint": "tiny-a"})
    t = threading.Thread(target=lambda: answer.update(r=_post(served, body)))
    t.start()
    deadline = time.monotonic() + SERVE_TIMEOUT_S
    running = []
    while not running and time.monotonic() < deadline:
        running = [n for n, x in _cluster(served).items() if x["state"] == "running"]
        time.sleep(0.2)
    assert running, "the request never started"
    victim = _replica_actor(running[0])
    pid = ray.get(victim.__ray_call__.remote(lambda self: __import__("os").getpid()))
    ray.kill(victim, no_restart=False)
    t.join(SERVE_TIMEOUT_S)
    assert answer["r"].status_code == 200, answer["r"].text
    assert json.loads(answer["r"].json()["info"])["seed"] == 9
    deadline = time.monotonic() + SERVE_TIMEOUT_S
    while _cluster(served)[running[0]]["state"] == "restarting" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _cluster(served)[running[0]]["state"] == "idle" and not psutil.pid_exists(pid)


def _replica_actor(deployment: str):
    from ray.util import list_named_actors

    (name,) = [a["name"] for a in list_named_actors(all_namespaces=True) if f"#{deployment}#" in a["name"]]
    return ray.get_actor(name, namespace="serve")
