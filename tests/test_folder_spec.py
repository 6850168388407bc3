"""A diffusers folder is planned with its own component configs (a distilled or scaled variant is
another size than its catalogue architecture); a folder with the catalogue's configs plans as the
catalogue model itself."""

import json
import os
import subprocess
import sys

import pytest
from tiny_pipelines import build_pipeline

from lowvram.catalogue import MODELS, build_component
from lowvram.catalogue.folder import folder_spec, same_config
from lowvram.checkpoints.inspect import Inspection, inspect_path
from lowvram.errors import UserError
from lowvram.plan import Policy, Workload, make_plan
from lowvram.plan.machine import cpu_machine

RAM = 16 * 2**30


@pytest.fixture(scope="module")
def tiny_flux(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("flux") / "flux")
    build_pipeline("flux-dev", folder)
    return folder


def _save_config(module, folder: str) -> None:
    """What save_pretrained writes as the component's config.json (diffusers and transformers alike)."""
    if hasattr(module, "save_config"):
        module.save_config(folder)
    else:
        module.config.save_pretrained(folder)


def _config_folder(model, root) -> str:
    """A diffusers folder holding only model_index.json and each component's config.json as the libraries
    save them from the catalogue's configs (every constructor default and version written out)."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "model_index.json"), "w") as f:
        json.dump({"_class_name": model.pipeline}, f)
    for comp in model.components:
        _save_config(build_component(comp), os.path.join(root, comp.name))
    return str(root)


def test_tiny_folder_plans_its_own_parameters(tiny_flux):
    rep = inspect_path(tiny_flux)
    spec = folder_spec(MODELS[rep.architecture], rep)
    assert spec.name == "flux-dev"  # the name (defaults, pipeline, output) stays the catalogue's
    assert {c.config for c in spec.components} == {os.path.join(tiny_flux, c.name, "config.json") for c in spec.components}
    plan = make_plan(spec, Workload(64, 64, steps=2), cpu_machine(RAM), Policy())
    stored = {c.name: c.params for c in rep.components}
    assert {c.name: c.params for c in plan.components} == stored
    assert sum(stored.values()) < 2_000_000  # not the catalogue's 11.9 B


def test_catalogue_configs_as_saved_plan_as_the_catalogue(tmp_path):
    for name, model in MODELS.items():  # every class: diffusers defaults, CLIP, T5 encoders, Llama, Qwen2.5-VL
        folder = _config_folder(model, tmp_path / name)
        rep = Inspection(folder, "diffusers", name, model.family, "", [], [])
        assert folder_spec(model, rep) is model, name  # same spec: same simulations, same shipped answers


def test_one_changed_field_is_the_folders(tmp_path):
    model = MODELS["sdxl"]
    folder = _config_folder(model, tmp_path / "ssd")
    path = os.path.join(folder, "unet", "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["transformer_layers_per_block"] = [1, 1, 2]  # a distilled UNet (SSD-1B style): fewer blocks in the middle
    with open(path, "w") as f:
        json.dump(cfg, f)
    spec = folder_spec(model, Inspection(folder, "diffusers", "sdxl", model.family, "", [], []))
    assert [c.config for c in spec.components] == [path if c.name == "unet" else c.config for c in model.components]
    assert not same_config(model.component("unet"), cfg)


def test_single_files_keep_the_catalogue(tmp_path):
    model = MODELS["sd15"]
    rep = Inspection(str(tmp_path / "x.safetensors"), "single-file", "sd15", model.family, "", [], [])
    assert folder_spec(model, rep) is model


def test_corrupt_component_config_is_a_user_error(tmp_path):
    model = MODELS["sd15"]
    folder = tmp_path / "bad"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (folder / "unet" / "config.json").write_text("{not json")
    with pytest.raises(UserError):
        folder_spec(model, Inspection(str(folder), "diffusers", "sd15", model.family, "", [], []))


def test_cli_plans_the_folder_not_the_catalogue(tiny_flux):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-m", "lowvram.cli", "plan", tiny_flux, "--width", "64", "--height", "64",
                          "--steps", "2", "--json"], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    stored = {c.name: c.params for c in inspect_path(tiny_flux).components}
    assert {c["name"]: c["params"] for c in plan["components"]} == stored


def test_generate_plans_and_runs_the_folder_as_it_is(tiny_flux, tmp_path):
    from lowvram.generate.run import GenerateRequest, generate
    from lowvram.generate.session import planner_for

    req = GenerateRequest(prompt="a red cat", model=tiny_flux, width=64, height=64, steps=2,
                          output=str(tmp_path / "out.png"), quiet=True, seed=1)
    res = generate(req, planner_for(cpu_machine(RAM)))
    assert res.plan.model == "flux-dev"
    assert {c.name: c.params for c in res.plan.components} == {c.name: c.params for c in inspect_path(tiny_flux).components}
    assert os.path.isfile(res.paths[0])
