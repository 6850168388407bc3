"""The A1111 sampler table: every entry builds the diffusers scheduler it claims, and reads back as its name."""

from importlib.util import find_spec

import diffusers
import pytest

from lowvram.errors import UserError
from lowvram.generate.samplers import (AUTOMATIC, SAMPLERS, SCHEDULE_BY_LABEL, SCHEDULES, a1111_names, api_samplers,
                                       api_schedulers, make_scheduler, resolve_sampler)

# SD1.5's scheduler config as published (runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json).
SD15 = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
            steps_offset=1, timestep_spacing="leading", prediction_type="epsilon")
# FLUX.1-dev's (black-forest-labs/FLUX.1-dev scheduler/scheduler_config.json).
FLUX = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
            base_image_seq_len=256, max_image_seq_len=4096)

RUNNABLE = [s for s in SAMPLERS if s.requires is None]


def _base(flow: bool):
    return diffusers.FlowMatchEulerDiscreteScheduler(**FLUX) if flow else diffusers.EulerDiscreteScheduler(**SD15)


@pytest.mark.parametrize("sampler", RUNNABLE, ids=lambda s: f"{s.name}{' (flow)' if s.flow else ''}")
def test_each_sampler_and_schedule_builds_and_reads_back(sampler):
    family = "flux" if sampler.flow else "sd1"
    base = _base(sampler.flow)
    for sched in SCHEDULES:
        if sched.label not in sampler.schedules:
            with pytest.raises(UserError, match="not available"):
                resolve_sampler(sampler.name, sched.label, family)
            continue
        choice = resolve_sampler(sampler.name.upper(), sched.label.lower(), family)
        assert choice.sampler is sampler and choice.schedule is sched
        if sched.requires and find_spec(sched.requires) is None:
            with pytest.raises(UserError, match=f"pip install {sched.requires}"):
                make_scheduler(choice, base)
            continue
        s = make_scheduler(choice, base)
        assert type(s).__name__ == sampler.scheduler
        for k, v in sampler.config:
            assert s.config[k] == v
        if sampler.flow:
            s.set_timesteps(8, mu=0.5)  # Flux's pipeline passes mu (dynamic shifting)
            assert s.config["shift"] == 3.0  # the model's training shift carries over
        else:
            s.set_timesteps(8)
        assert len(s.timesteps) >= 8
        if sched is AUTOMATIC:
            expected = sampler.default_schedule if sampler.default_schedule != "Automatic" else (
                "Automatic" if sampler.flow else "DDIM")  # SD1.5's own spacing is A1111's "DDIM" schedule
        elif sched.label == "Uniform" and sampler.default_schedule == "Automatic":
            expected = "Automatic"  # the same sigmas: A1111's Automatic for these samplers is the model's uniform spacing
        else:
            expected = sched.label
        assert a1111_names(s) == (sampler.name, expected)


def test_short_cli_names_and_a1111_aliases_resolve():
    for short, name in [("euler", "Euler"), ("euler_a", "Euler a"), ("dpm++_2m", "DPM++ 2M"), ("ddim", "DDIM"),
                        ("unipc", "UniPC"), ("k_dpmpp_2m_sde", "DPM++ 2M SDE"), ("Euler A", "Euler a")]:
        assert resolve_sampler(short, None, "sdxl").sampler.name == name
    flow = resolve_sampler("flow_euler", None, "flux")
    assert flow.sampler.flow and flow.sampler.scheduler == "FlowMatchEulerDiscreteScheduler"
    assert resolve_sampler("Euler", None, "sd3").sampler is flow.sampler


def test_old_combined_names_split_into_sampler_and_schedule():
    c = resolve_sampler("DPM++ 2M Karras", None, "sd1")
    assert (c.sampler.name, c.schedule.label) == ("DPM++ 2M", "Karras")
    s = make_scheduler(c, _base(False))
    assert s.config["use_karras_sigmas"] and a1111_names(s) == ("DPM++ 2M", "Karras")


@pytest.mark.parametrize("name,family,words", [
    ("Eulr a", "sdxl", "did you mean 'Euler a'"),
    ("DPM++ 2S a", "sd1", "no diffusers counterpart"),
    ("Euler a", "flux", "not available for flux"),
    ("flow_euler", "sd1", "not available for sd1"),
])
def test_bad_sampler_names_say_what_to_do(name, family, words):
    with pytest.raises(UserError, match="choose one of") as e:
        resolve_sampler(name, None, family)
    assert words in str(e.value)


def test_unknown_schedule_suggests():
    with pytest.raises(UserError, match="did you mean 'Karras'"):
        resolve_sampler("Euler", "Karas", "sd1")


def test_no_sampler_keeps_the_pipeline_scheduler_and_a_schedule_alone_changes_only_its_spacing():
    base = _base(False)
    assert make_scheduler(resolve_sampler(None, None, "sd1"), base) is base
    s = make_scheduler(resolve_sampler(None, "Karras", "sd1"), base)
    assert type(s) is type(base) and s.config["use_karras_sigmas"]
    assert a1111_names(s) == ("Euler", "Karras")


def test_a_missing_package_is_one_sentence():
    lms = next(s for s in SAMPLERS if s.name == "LMS")
    if find_spec("scipy") is not None:
        pytest.skip("scipy is installed here")
    with pytest.raises(UserError, match="pip install scipy"):
        make_scheduler(resolve_sampler(lms.name, None, "sd1"), _base(False))


def test_pipeline_defaults_never_read_as_class_names():
    cases = [(diffusers.DDPMScheduler(), "DDPM"), (diffusers.EulerDiscreteScheduler(timestep_spacing="linspace"), "Euler"),
             (diffusers.DPMSolverMultistepScheduler(), "DPM++ 2M"),
             (diffusers.DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++", solver_type="heun"), "DPM++ 2M SDE Heun"),
             (diffusers.UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction"), "UniPC"),
             (diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0), "Euler")]
    for sched, name in cases:
        got = a1111_names(sched)
        assert got[0] == name and "Scheduler" not in got[0]
    assert a1111_names(diffusers.EulerDiscreteScheduler(timestep_spacing="linspace"))[1] == "Automatic"
    # DPM++ 2M's A1111 "Automatic" is Karras: an unflagged linspace run is said to be Uniform
    assert a1111_names(diffusers.DPMSolverMultistepScheduler(timestep_spacing="linspace"))[1] == "Uniform"


def test_api_lists_match_a1111_shapes():
    items = api_samplers()
    names = [i["name"] for i in items]
    assert len(names) == len(set(names))
    for want in ("Euler", "Euler a", "DPM++ 2M", "DPM++ 2M SDE", "DPM++ SDE", "DDIM", "UniPC", "Heun", "LMS", "DPM2", "DPM2 a"):
        assert want in names
    dpm = next(i for i in items if i["name"] == "DPM++ 2M")
    assert dpm == {"name": "DPM++ 2M", "aliases": ["k_dpmpp_2m", "dpm++_2m"], "options": {"scheduler": "karras"}}
    assert [i["name"] for i in api_samplers("flux")] == ["Euler"]
    labels = [s["label"] for s in api_schedulers()]
    assert labels[:5] == ["Automatic", "Uniform", "Karras", "Exponential", "SGM Uniform"]
    assert set(SCHEDULE_BY_LABEL) == set(labels)
