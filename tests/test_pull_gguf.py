"""`lowvram pull --gguf`: a published GGUF quant for a small card, chosen by planning, fetched with only
the base repo's other components — against a local fake hub (HF_ENDPOINT), never the real one."""

import json
import os
import shutil
import subprocess
import sys

import gguf
import pytest
from fake_hub import FakeHub
from PIL import Image
from tiny_pipelines import build_pipeline, component_state

import layouts as L
from checkpoints import write_gguf
from lowvram.catalogue import MODELS
from lowvram.catalogue.quants import QUANTS
from lowvram.errors import UserError
from lowvram.plan import Machine, Policy, Workload, make_plan
from lowvram.plan.weights_choice import choose_weights, gguf_file_weights

GiB = 2**30
SPEC = MODELS["flux-dev"]
PUBLISHED = ("Q8_0", "Q5_0", "Q4_0")  # the quants the fake GGUF repo carries (those gguf can write at tiny sizes)


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    """The tiny flux-dev diffusers repo (with the extras pull must skip) and its GGUF repo."""
    root = tmp_path_factory.mktemp("pull-gguf")
    base = root / "base"
    build_pipeline("flux-dev", str(base))
    for junk in ("_tok1", "_tok2"):
        shutil.rmtree(base / junk, ignore_errors=True)
    (base / "flux1-dev.safetensors").write_bytes(b"\0" * 4096)  # the root single file
    (base / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"\0" * 4096)  # a .bin copy
    bfl = L.flux_to_bfl(component_state(str(base), "transformer"))
    ggufs = root / "gguf"
    ggufs.mkdir()
    for q in PUBLISHED:
        write_gguf(ggufs / SPEC.gguf.filename(q), bfl, gguf.GGMLQuantizationType[q])
    (ggufs / "README.md").write_text("city96-style GGUF conversions\n")
    return base, ggufs


@pytest.fixture()
def hub(repos, tmp_path):
    base, ggufs = repos
    with FakeHub({SPEC.hf_repo: str(base), SPEC.gguf.repo: str(ggufs)}) as h:
        env = dict(os.environ, HF_ENDPOINT=h.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_XET="1",
                   HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_ENABLE_HF_TRANSFER="0")
        yield h, env


def _cli(env, *args):
    return subprocess.run([sys.executable, "-m", "lowvram.cli", *args], capture_output=True, text=True, env=env, timeout=300)


def _downloaded(h, repo: str) -> set[str]:
    """Files the client GET from `repo` (HEADs are previews, not downloads)."""
    prefix = f"GET /{repo}/resolve/"
    return {r[len(prefix):].split("/", 1)[1] for r in h.requests if r.startswith(prefix)}


def _files(folder) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs}


def _one_line(r) -> str:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_pull_gguf_auto_for_a_6gb_card_then_list_and_generate(repos, hub, tmp_path):
    base, _ = repos
    h, env = hub
    r = _cli(env, "pull", "flux-dev", "--gguf", "auto", "--vram", "6GB", "--ram", "16GB")
    assert r.returncode == 0, r.stderr
    # the planner streams Q8_0 on a 6 GB card with 16 GB RAM: the highest-quality quant fits
    assert "chose GGUF Q8_0: Q8_0 is the highest-quality published quant whose plan fits" in r.stderr, r.stderr
    assert r.stderr.index("chose GGUF Q8_0") < r.stderr.index("to download")  # said before downloading
    assert "flux1-dev-Q8_0.gguf" in r.stderr and "not its transformer weights" in r.stderr
    assert _downloaded(h, SPEC.gguf.repo) == {"flux1-dev-Q8_0.gguf"}
    expected = {f for f in _files(base) if not f.startswith("transformer/diffusion_pytorch_model")
                and f != "flux1-dev.safetensors"}
    assert "transformer/config.json" in expected and "text_encoder_2/model.safetensors" in expected
    assert _downloaded(h, SPEC.hf_repo) == expected
    lines = dict(line.split(": ", 1) for line in r.stdout.strip().splitlines())
    gguf_path, components = lines["flux-dev"].strip(), lines["flux-dev components"].strip()
    assert gguf_path.endswith("flux1-dev-Q8_0.gguf") and os.path.isfile(gguf_path)
    assert _files(components) == expected
    assert str(tmp_path / "hf") in gguf_path  # honours HF_HOME

    r = _cli(env, "list", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [(row["name"], row["variant"], row["in_use"]) for row in rows] == [("flux-dev", "GGUF Q8_0", True)]
    assert rows[0]["path"] == gguf_path and rows[0]["config"] == components

    out = tmp_path / "pulled.png"
    r = _cli(env, "generate", "a cat", "--model", "flux-dev", "--width", "64", "--height", "64", "--steps", "2",
             "--vram", "48GB", "--quiet", "-o", str(out))
    assert r.returncode == 0, r.stderr
    info = Image.open(out).info["parameters"]
    assert "transformer resident Q8_0" in info, info  # the GGUF file, not bf16 weights

    # pulling the full weights makes them what generate loads; pulling the quant again switches back
    r = _cli(env, "pull", "flux-dev")
    assert r.returncode == 0, r.stderr
    assert "transformer/diffusion_pytorch_model.safetensors" in _downloaded(h, SPEC.hf_repo)
    rows = json.loads(_cli(env, "list", "--json").stdout)
    assert {row["variant"]: row["in_use"] for row in rows} == {"diffusers": True, "GGUF Q8_0": False}
    n = len(h.requests)
    r = _cli(env, "pull", "flux-dev", "--gguf", "q8_0")
    assert r.returncode == 0, r.stderr
    assert not [x for x in h.requests[n:] if x.startswith("GET") and "/resolve/" in x]  # all cached: nothing fetched
    rows = json.loads(_cli(env, "list", "--json").stdout)
    assert {row["variant"]: row["in_use"] for row in rows} == {"diffusers": False, "GGUF Q8_0": True}


def test_lossless_refuses_or_ignores_gguf(hub):
    h, env = hub
    line = _one_line(_cli(env, "pull", "flux-dev", "--gguf", "Q4_0", "--quality", "lossless"))
    assert "--quality lossless rules out" in line and "drop --gguf" in line
    line = _one_line(_cli(env, "pull", "flux-dev", "--gguf", "auto", "--quality", "lossless", "--vram", "6GB"))
    assert "--quality lossless rules out" in line
    assert not _downloaded(h, SPEC.gguf.repo) and not _downloaded(h, SPEC.hf_repo)
    r = _cli(env, "pull", "flux-dev", "--vram", "6GB", "--ram", "16GB")  # lossless by default: the full weights
    assert r.returncode == 0, r.stderr
    assert "chose full weights: the lossless policy rules out GGUF quants" in r.stderr
    assert not _downloaded(h, SPEC.gguf.repo)
    assert "transformer/diffusion_pytorch_model.safetensors" in _downloaded(h, SPEC.hf_repo)


def test_bad_gguf_requests_are_one_sentence(hub):
    h, env = hub
    line = _one_line(_cli(env, "pull", "flux-dev", "--gguf", "Q3_K_M"))
    assert "Unknown --gguf 'Q3_K_M' for flux-dev" in line and "Q8_0" in line and "Q2_K" in line
    line = _one_line(_cli(env, "pull", "sdxl", "--gguf", "auto", "--vram", "6GB"))
    assert "sdxl has no published GGUF quants" in line and "flux-dev" in line
    r = _cli(env, "pull", "flux-dev", "--gguf", "Q6_K", "--vram", "6GB")  # published, not on this hub: planned, then
    last = r.stderr.strip().splitlines()[-1]                                # the hub says no
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert last.startswith("lowvram: city96/FLUX.1-dev-gguf has no flux1-dev-Q6_K.gguf"), last
    line = _one_line(_cli(env, "pull", "flux-dev", "--gguf", "auto", "--quality", "best", "--vram", "6GB"))
    assert "--quality" in line
    assert not _downloaded(h, SPEC.gguf.repo) and not _downloaded(h, SPEC.hf_repo)


def test_gguf_file_with_a_diffusers_config_takes_its_other_components_from_there(tmp_path):
    """What `generate --model sd35-large` does after a GGUF pull: the .gguf for the transformer, the base
    snapshot (--config) for the text encoders and VAE — an MMDiT in SAI names this time."""
    import numpy as np

    from lowvram.generate.run import GenerateRequest, generate

    base = tmp_path / "base"
    build_pipeline("sd35-large", str(base))
    state = component_state(str(base), "transformer")
    path = tmp_path / MODELS["sd35-large"].gguf.filename("Q8_0")
    write_gguf(path, L.sd3_to_mmdit(state), gguf.GGMLQuantizationType.Q8_0)
    machine = _machine(4, 64, device="cpu")

    def plan_fn(spec, wl, file_weights=None):
        return make_plan(spec, wl, machine, Policy("lossless"), file_weights=file_weights)

    def run(model, name, config=None):
        req = GenerateRequest(prompt="a red cat", model=str(model), width=64, height=64, steps=2, seed=5,
                              output=str(tmp_path / name), quiet=True, config=config)
        return np.asarray(Image.open(generate(req, plan_fn).paths[0])).astype(int)

    a, b = run(base, "ref.png"), run(path, "gguf.png", str(base))
    assert np.abs(a - b).mean() < 3.0  # Q8_0 Linear weights, the rest as stored
    for f in os.listdir(base / "text_encoder_3"):
        if f.endswith(".safetensors"):
            os.remove(base / "text_encoder_3" / f)
    with pytest.raises(UserError, match="lacks text_encoder_3"):
        run(path, "broken.png", str(base))


def _machine(vram_gib: float, ram_gib: float, device: str = "cuda") -> Machine:
    """A card to plan for; generation here runs on the CPU, so what it runs is planned with device="cpu"."""
    return Machine("test", int(vram_gib * GiB), int(ram_gib * GiB), 12.5e9, 40.0, device=device)


def _fits(quant: str, machine: Machine, quality: str = "balanced") -> bool:
    wl = Workload(SPEC.width, SPEC.height, 1, SPEC.steps)
    return make_plan(SPEC, wl, machine, Policy(quality), find_smallest=False,
                     file_weights=gguf_file_weights(SPEC, QUANTS[quant])).fits


def test_auto_takes_the_highest_quality_quant_that_fits():
    # 1.6 GB leaves too little beside the activations for Q8_0's double-buffered blocks, not for smaller ones
    m = _machine(1.6, 16)
    c = choose_weights(SPEC, "balanced", "auto", m)
    assert c.quant is not None and c.quant.name != "Q8_0" and c.plan.fits
    better = SPEC.gguf.quants[:SPEC.gguf.quants.index(c.quant.name)]
    assert better and not any(_fits(q, m) for q in better)
    assert all(q in c.reason for q in better)
    with pytest.raises(UserError, match="No published GGUF quant of flux-dev fits"):
        choose_weights(SPEC, "balanced", "auto", _machine(1.0, 16))


def test_default_policy_decides_between_full_weights_and_gguf():
    # 16 GB RAM cannot hold the bf16 transformer: its lossless plan re-reads it from disk every step
    c = choose_weights(SPEC, "balanced", None, _machine(6, 16))
    assert c.quant is not None and c.quant.name == "Q8_0"
    assert any(p.role == "denoiser" and p.source == "disk" for p in c.full_plan.components)
    assert "read from disk every step" in c.reason
    # 64 GB RAM holds it: the full weights, which the planner may still lower to 8 bits on the fly
    c = choose_weights(SPEC, "balanced", None, _machine(6, 64))
    assert c.quant is None and c.full_plan.fits
    assert choose_weights(SPEC, "lossless", None, None).quant is None
    assert choose_weights(MODELS["sdxl"], "balanced", None, _machine(6, 16)).quant is None  # no GGUF published


def test_catalogue_quants_match_ggml_block_sizes():
    for q in QUANTS.values():
        block, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[q.tensor_type]]
        assert q.bits_per_weight == nbytes * 8 / block, q
    for name in ("flux-dev", "flux-schnell", "sd35-large"):
        g = MODELS[name].gguf
        assert g is not None and g.quant_of(g.filename("Q8_0")).name == "Q8_0" and g.quant_of("README.md") is None
    assert MODELS["flux-dev"].gguf.filename("Q4_K_S") == "flux1-dev-Q4_K_S.gguf"
    assert MODELS["sd35-large"].gguf.filename("Q4_0") == "sd3.5_large-Q4_0.gguf"
