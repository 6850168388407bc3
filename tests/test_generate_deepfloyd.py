"""DeepFloyd IF end to end on CPU: a tiny random three-stage cascade saved as the three diffusers folders
a user (or `lowvram pull`) has, generated through the CLI and in-process under the plan."""

import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from a1111 import parse_a1111
from tiny_pipelines import IF_STAGE_FOLDERS, build_if_cascade

from lowvram.errors import UserError
from lowvram.generate.run import GenerateRequest, generate
from lowvram.plan import Machine, Policy, make_plan

GiB = 2**30
SIZE = 128  # the smallest side IF takes: 8 px at stage I, 32 px at stage II
CASCADE_COMPONENTS = ["unet", "unet_2", "unet_3", "text_encoder", "text_encoder_3", "vae"]


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    root = tmp_path_factory.mktemp("if") / "IF"
    build_if_cascade(str(root))
    return str(root)


def _run(folder, tmp_path, name="out.png", vram_gb=48, **kw):
    machine = Machine("test", vram_gb * GiB, 64 * GiB, 12.5e9, 40.0, device="cpu")  # the CPU runs it
    req = GenerateRequest(prompt=kw.pop("prompt", "a red cat"), model=folder, width=kw.pop("width", SIZE),
                          height=kw.pop("height", SIZE), steps=kw.pop("steps", 4), output=str(tmp_path / name), quiet=True, **kw)
    return generate(req, lambda spec, wl, fw=None: make_plan(spec, wl, machine, Policy("lossless"), file_weights=fw))


def _pixels(path):
    return np.asarray(Image.open(path))


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "lowvram.cli", *args], capture_output=True, text=True, timeout=300, env=env)


def _assert_one_sentence(r):
    """A user mistake: exit status 2 and one line on stderr, no traceback."""
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, (r.returncode, r.stderr)


def test_cli_writes_the_final_stage_image_with_parameters(cascade, tmp_path):
    out = tmp_path / "if.png"
    r = _cli("generate", "a red cat", "--model", cascade, "--width", str(SIZE), "--height", str(SIZE), "--steps", "4",
             "--seed", "7", "--negative", "blurry", "--vram", "48GB", "--quiet", "-o", str(out))
    assert r.returncode == 0, r.stderr
    im = Image.open(out)
    assert im.size == (SIZE, SIZE)
    info = parse_a1111(im.info["parameters"])
    assert info["Prompt"] == "a red cat" and info["Negative prompt"] == "blurry"
    assert info["Steps"] == "4" and info["Seed"] == "7" and info["Size"] == f"{SIZE}x{SIZE}" and info["Model"] == "deepfloyd-if"
    assert info["CFG scale"] == "7.0" and info["Sampler"] == "DDPMScheduler"
    # stages II and III follow stage I's 4 steps in the reference ratio 100 : 50 : 75
    assert info["Stage II"].startswith("2 steps") and info["Stage III"].startswith("3 steps")
    assert "CFG scale 4.0" in info["Stage II"] and "noise level 100" in info["Stage III"]
    assert all(name in info["lowvram plan"] for name in CASCADE_COMPONENTS)
    assert not list(tmp_path.glob("*.part"))


def test_seed_is_reproducible_and_the_t5_is_loaded_once(cascade, tmp_path, monkeypatch):
    import lowvram.generate.loader as loader

    loaded = []
    original = loader.load_module

    def counting(sub, library, class_name, *a, **k):
        loaded.append(class_name)
        return original(sub, library, class_name, *a, **k)

    monkeypatch.setattr(loader, "load_module", counting)
    a = _pixels(_run(cascade, tmp_path, "a.png", seed=1).paths[0])
    # stage I's T5 serves stages I and II: stage II's copy in its folder is never read
    assert sorted(loaded) == sorted(["T5EncoderModel", "UNet2DConditionModel", "UNet2DConditionModel",
                                     "CLIPTextModel", "UNet2DConditionModel", "AutoencoderKL"])
    b = _pixels(_run(cascade, tmp_path, "b.png", seed=1).paths[0])
    c = _pixels(_run(cascade, tmp_path, "c.png", seed=2).paths[0])
    assert a.shape == (SIZE, SIZE, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_one_executor_runs_the_plan_phases_in_cascade_order(cascade, tmp_path, monkeypatch):
    from lowvram.runtime.executor import PlanExecutor

    order = []
    original = PlanExecutor.activate

    def recording(self, name):
        if self.active != name:
            order.append(name)
        return original(self, name)

    monkeypatch.setattr(PlanExecutor, "activate", recording)
    _run(cascade, tmp_path)
    assert order == ["text_encoder", "unet", "unet_2", "text_encoder_3", "unet_3", "vae"]


def test_streamed_plan_gives_the_same_image(cascade, tmp_path):
    """An 8 GB plan streams the real-size stage I UNet and T5; on the tiny cascade the same share of their
    units is streamed, and the image must equal the all-resident one."""
    full = _run(cascade, tmp_path, "full.png", seed=3)
    small = _run(cascade, tmp_path, "small.png", vram_gb=8, seed=3)
    assert {c.name for c in small.plan.components if c.placement == "streamed"} >= {"unet", "text_encoder"}
    assert np.array_equal(_pixels(full.paths[0]), _pixels(small.paths[0]))


def test_batch_without_guidance(cascade, tmp_path):
    res = _run(cascade, tmp_path, "batch.png", batch=2, guidance=1.0, seed=5)
    assert res.paths == [str(tmp_path / "batch-0.png"), str(tmp_path / "batch-1.png")]
    a, b = (_pixels(p) for p in res.paths)
    assert a.shape == (SIZE, SIZE, 3) and not np.array_equal(a, b)
    info = parse_a1111(Image.open(res.paths[1]).info["parameters"])
    assert info["CFG scale"] == "1.0" and "CFG scale 1.0" in info["Stage II"] and "CFG scale 1.0" in info["Stage III"]
    assert info["Batch pos"] == "1"


def test_ctrl_c_stops_between_steps(cascade, tmp_path, monkeypatch):
    import diffusers

    original = diffusers.UNet2DConditionModel.forward
    calls = {"n": 0}

    def interrupting(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:  # the first step of stage II (stage I runs 4), CFG as one batch
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *a, **k)

    monkeypatch.setattr(diffusers.UNet2DConditionModel, "forward", interrupting)
    res = _run(cascade, tmp_path, "stopped.png")
    assert res.interrupted_at == 5 and res.paths == []
    assert not (tmp_path / "stopped.png").exists()


def test_inspection_identifies_the_cascade(cascade, tmp_path):
    from lowvram.checkpoints.inspect import inspect_path

    for path in (cascade, os.path.join(cascade, IF_STAGE_FOLDERS[0]), os.path.join(cascade, IF_STAGE_FOLDERS[2])):
        rep = inspect_path(path)
        assert rep.architecture == "deepfloyd-if" and rep.format == "diffusers", path
        assert sorted(c.name for c in rep.components) == sorted(CASCADE_COMPONENTS) and rep.missing == []
    kinds = {c.name: c.kind for c in inspect_path(cascade).components}
    assert kinds["vae"] == "vae4" and kinds["unet_3"] == "unet"
    partial = tmp_path / "IF"
    shutil.copytree(cascade, partial, ignore=shutil.ignore_patterns(IF_STAGE_FOLDERS[2]))
    rep = inspect_path(str(partial))
    assert rep.architecture == "deepfloyd-if" and sorted(rep.missing) == ["text_encoder_3", "unet_3", "vae"]
    # two stage II folders, neither named like its repo: which one is meant cannot be guessed
    os.rename(partial / IF_STAGE_FOLDERS[1], partial / "stage2-a")
    shutil.copytree(partial / "stage2-a", partial / "stage2-b")
    with pytest.raises(UserError, match="several DeepFloyd IF stage II folders"):
        inspect_path(str(partial))


def test_missing_stage_is_one_sentence(cascade, tmp_path):
    partial = tmp_path / "IF"
    shutil.copytree(cascade, partial, ignore=shutil.ignore_patterns(IF_STAGE_FOLDERS[2]))
    out = tmp_path / "x.png"
    r = _cli("generate", "a cat", "--model", str(partial), "--vram", "8GB", "-o", str(out))
    _assert_one_sentence(r)
    assert "stage III" in r.stderr and str(partial / IF_STAGE_FOLDERS[2]) in r.stderr and "lowvram pull deepfloyd-if" in r.stderr
    # the stage I folder given alone: its siblings are where stages II and III are looked for
    alone = tmp_path / "only" / IF_STAGE_FOLDERS[0]
    shutil.copytree(os.path.join(cascade, IF_STAGE_FOLDERS[0]), alone)
    with pytest.raises(UserError, match=r"stage II is missing.*stage III is missing too"):
        _run(str(alone), tmp_path, "y.png")
    assert not out.exists() and not (tmp_path / "y.png").exists()


def test_bad_inputs_are_refused_before_loading(cascade, tmp_path):
    for kw, words in [(dict(width=192), "multiple of 128"), (dict(sampler="euler"), "--sampler"),
                      (dict(loras=[(str(tmp_path / "x.safetensors"), 1.0)]), "LoRA"),
                      (dict(init_image=str(tmp_path / "x.png")), "img2img")]:
        with pytest.raises(UserError, match=words):
            _run(cascade, tmp_path, "bad.png", **kw)
    assert not (tmp_path / "bad.png").exists()


def test_pull_fetches_the_three_stage_repos_then_generate(cascade, tmp_path):
    from fake_hub import FakeHub

    from lowvram.catalogue.deepfloyd import STAGES

    repos = {s.repo: os.path.join(cascade, folder) for s, folder in zip(STAGES, IF_STAGE_FOLDERS)}
    with FakeHub(repos) as h:
        env = dict(os.environ, HF_ENDPOINT=h.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_XET="1",
                   HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_ENABLE_HF_TRANSFER="0")
        r = _cli("pull", "deepfloyd-if", env=env)
        assert r.returncode == 0, r.stderr
    hub = tmp_path / "hf" / "hub"
    got = {str(p.relative_to(hub)).split(os.sep, 1)[0] + "/" + "/".join(p.relative_to(hub).parts[3:])
           for p in hub.rglob("*") if "snapshots" in p.parts and p.is_file()}
    assert "models--DeepFloyd--IF-I-XL-v1.0/text_encoder/model.safetensors" in got
    assert "models--stabilityai--stable-diffusion-x4-upscaler/vae/diffusion_pytorch_model.safetensors" in got
    assert "models--DeepFloyd--IF-II-L-v1.0/unet/diffusion_pytorch_model.safetensors" in got
    assert not any(g.startswith("models--DeepFloyd--IF-II-L-v1.0/text_encoder") for g in got)  # stage II's T5 copy
    out = tmp_path / "pulled.png"
    r = _cli("generate", "a cat", "--model", "deepfloyd-if", "--width", str(SIZE), "--height", str(SIZE), "--steps", "2",
             "--vram", "48GB", "--quiet", "-o", str(out), env=env)
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == (SIZE, SIZE)
    # the cache lost the upscaler: generate says which stage and how to get it back
    shutil.rmtree(hub / "models--stabilityai--stable-diffusion-x4-upscaler")
    r = _cli("generate", "a cat", "--model", "deepfloyd-if", "--vram", "48GB", "-o", str(tmp_path / "x.png"), env=env)
    _assert_one_sentence(r)
    assert "stage III" in r.stderr and "lowvram pull deepfloyd-if" in r.stderr and not (tmp_path / "x.png").exists()
    # a hub without the upscaler: after the progress bars of the first two stages, one sentence names that repo
    with FakeHub({k: v for k, v in repos.items() if "upscaler" not in k}) as h:
        r = _cli("pull", "deepfloyd-if", env=dict(env, HF_ENDPOINT=h.url, HF_HOME=str(tmp_path / "hf2")))
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert last.startswith("lowvram: stabilityai/stable-diffusion-x4-upscaler was not found"), last
