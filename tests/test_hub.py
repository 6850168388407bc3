"""`lowvram pull` / `list` against a local fake hub (HF_ENDPOINT) — never the real one."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from fake_hub import FakeHub
from tiny_pipelines import build_pipeline

from lowvram.catalogue import MODELS


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    build_pipeline("flux-schnell", str(repo))
    for junk in ("_tok1", "_tok2"):
        shutil.rmtree(repo / junk, ignore_errors=True)
    (repo / "flux1-schnell.safetensors").write_bytes(b"\0" * 4096)  # the root single file lowvram must skip
    (repo / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"\0" * 4096)  # and .bin copies
    with FakeHub({MODELS["flux-schnell"].hf_repo: str(repo)}) as h:
        env = dict(os.environ, HF_ENDPOINT=h.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_XET="1",
                   HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_ENABLE_HF_TRANSFER="0")
        yield h, env, repo


def _cli(env, *args):
    return subprocess.run([sys.executable, "-m", "lowvram.cli", *args], capture_output=True, text=True, env=env, timeout=300)


def test_pull_fetches_only_what_lowvram_loads_then_list_and_generate(hub, tmp_path):
    h, env, repo = hub
    h.fail_once.add("transformer/diffusion_pytorch_model.safetensors")  # the download breaks once: resumed
    r = _cli(env, "pull", "flux-schnell")
    assert r.returncode == 0, r.stderr
    path = r.stdout.strip().split(": ", 1)[1].strip()
    got = {os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs}
    assert "model_index.json" in got and "transformer/diffusion_pytorch_model.safetensors" in got
    assert "tokenizer_2/tokenizer.json" in got
    assert "flux1-schnell.safetensors" not in got and "transformer/diffusion_pytorch_model.bin" not in got
    assert str(tmp_path / "hf") in path  # honours HF_HOME
    r = _cli(env, "list", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["name"] for row in rows] == ["flux-schnell"]
    out = tmp_path / "pulled.png"
    r = _cli(env, "generate", "a cat", "--model", "flux-schnell", "--width", "64", "--height", "64", "--steps", "2",
             "--vram", "48GB", "--quiet", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert out.exists()


def test_pull_unknown_model_and_missing_repo(hub):
    h, env, _ = hub
    r = _cli(env, "pull", "sd9")
    assert r.returncode == 2 and "Unknown model" in r.stderr
    r = _cli(env, "pull", "sdxl")  # not on this hub
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_generate_by_name_when_not_installed(tmp_path):
    env = dict(os.environ, HF_HOME=str(tmp_path / "empty"))
    r = _cli(env, "generate", "a cat", "--model", "flux-schnell", "--vram", "8GB")
    assert r.returncode == 2 and "lowvram pull flux-schnell" in r.stderr
