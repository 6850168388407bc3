"""Past one machine, on a local Ray cluster the tests start: two declared GPUs (CPU-only torch treats
Ray's "GPU" as a label), so two workers / replicas run, each on the CPU, with tiny random-weight SD1.5.

`lowvram batch --ray` on Ray Data: completes, resumes, and writes the images the single-machine run
writes. The cluster is shut down at the end and no Ray process is left."""

import json
import os
import sys

import psutil
import pytest
import torch
from tiny_pipelines import build_pipeline

ray = pytest.importorskip("ray", reason='Ray is not installed: pip install -e ".[ray]" to run the cluster tests')

from lowvram import cli  # noqa: E402

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
GPU = "RTX 2060"  # as in test_server.py: fp16 compute, run in fp32 on the CPU
SMALL = {"width": 64, "height": 64, "steps": 2}
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


def _cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["lowvram", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _pngs(folder) -> dict[str, bytes]:
    return {f: open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))}


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
    code, _, err = _cli(monkeypatch, capsys, "batch", str(head), "--out", str(tmp_path / "ray"), "--model", model,
                        "--gpu", GPU, "--quiet")
    assert code == 0, err
    code, out, err = _cli(monkeypatch, capsys, "batch", str(jobs), "--out", str(tmp_path / "ray"), "--model", model,
                          "--gpu", GPU, "--ray")
    assert code == 0, err
    assert "2 of 4 lines already in" in err and "3 images written" in out, (out, err)
    assert [line.split("  ")[0] for line in err.splitlines() if "images/min" in line][-1] == "5/5 images"
    code, _, err = _cli(monkeypatch, capsys, "batch", str(jobs), "--out", str(tmp_path / "local"), "--model", model,
                        "--gpu", GPU, "--quiet")
    assert code == 0, err
    ray_pngs, local_pngs = _pngs(tmp_path / "ray"), _pngs(tmp_path / "local")
    assert list(ray_pngs) == ["00001-100.png", "00002-101.png", "00003-102.png", "00004-7.png", "00004-8.png"]
    assert ray_pngs == local_pngs
