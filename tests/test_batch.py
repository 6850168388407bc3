"""`lowvram batch` on this machine: a JSONL file of A1111 txt2img bodies -> NNNNN-SEED.png with infotext,
resumable, one progress display; bad lines named before anything runs. Tiny random-weight SD1.5, 64 px."""

import json
import os

import pytest
from PIL import Image
from cli_inproc import pngs, run_cli
from lowvram_serve import GPU
from tiny_pipelines import build_pipeline

from lowvram.batch.jobs import read_jobs
from lowvram.batch.run import local_results, run_batch
from lowvram.generate.session import Session, planner_for
from lowvram.plan.machine import resolve_run_machine
from lowvram.server.models import discover

SMALL = {"width": 64, "height": 64, "steps": 2}
JOBS = [dict(SMALL, prompt="a red cat", seed=11), dict(SMALL, prompt="a blue dog", seed=22, batch_size=2),
        dict(SMALL, prompt="a green owl", seed=33, negative_prompt="blur", cfg_scale=5),
        dict(SMALL, prompt="a lighthouse", seed=44, sampler_name="DPM++ 2M")]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch") / "tiny-sd15"
    build_pipeline("sd15", str(folder))
    return str(folder)


def _jobs_file(path, jobs, extra_lines=()):
    path.write_text("\n".join([json.dumps(j) for j in jobs] + list(extra_lines)) + "\n")
    return str(path)


def test_batch_writes_every_line_with_infotext_and_progress(model, tmp_path, monkeypatch, capsys):
    jobs = _jobs_file(tmp_path / "jobs.jsonl", JOBS, extra_lines=[""])  # a blank line is skipped
    code, out, err = run_cli(monkeypatch, capsys, "batch", jobs, "--out", str(tmp_path / "out"), "--model", model,
                             "--gpu", GPU)
    assert code == 0, err
    names = sorted(os.listdir(tmp_path / "out"))
    assert names == ["00001-11.png", "00002-22.png", "00002-23.png", "00003-33.png", "00004-44.png"]
    text = Image.open(tmp_path / "out" / "00003-33.png").text["parameters"]
    assert text.startswith("a green owl\nNegative prompt: blur\n") and "Seed: 33" in text and "CFG scale: 5" in text
    assert "Size: 64x64" in text and "Model: tiny-sd15" in text and "lowvram plan:" in text
    assert "Sampler: DPM++ 2M" in Image.open(tmp_path / "out" / "00004-44.png").text["parameters"]
    progress = [line for line in err.splitlines() if "images/min" in line]
    assert len(progress) == 4 and progress[-1].startswith("5/5 images") and "ETA 0:00" in progress[-1]
    assert "5 images written" in out


def test_a_stopped_batch_resumes_and_makes_the_same_images(model, tmp_path, monkeypatch, capsys):
    """Stopped after two lines (Ctrl-C between lines), then rerun: the rerun makes only the rest, and the
    folder equals an uninterrupted run's, byte for byte."""
    jobs = _jobs_file(tmp_path / "jobs.jsonl", JOBS)
    code, _, err = run_cli(monkeypatch, capsys, "batch", jobs, "--out", str(tmp_path / "whole"), "--model", model,
                           "--gpu", GPU, "--quiet")
    assert code == 0, err

    lines = read_jobs(jobs, discover(model, None), "lossless")
    session = Session(planner_for(resolve_run_machine(GPU)[0]))

    def stopped_after_two(pending):
        for k, result in enumerate(local_results(session, pending)):
            if k == 2:
                raise KeyboardInterrupt
            yield result

    os.makedirs(tmp_path / "resumed")
    try:
        with pytest.raises(KeyboardInterrupt):
            run_batch(lines, str(tmp_path / "resumed"), stopped_after_two)
    finally:
        session.unload()
    assert sorted(os.listdir(tmp_path / "resumed")) == ["00001-11.png", "00002-22.png", "00002-23.png"]  # no .part
    code, out, err = run_cli(monkeypatch, capsys, "batch", jobs, "--out", str(tmp_path / "resumed"), "--model", model,
                             "--gpu", GPU)
    assert code == 0, err
    assert "2 of 4 lines already in" in err and "2 images written" in out and "2 lines made, 2 already there" in out
    assert [line.split("  ")[0] for line in err.splitlines() if "images/min" in line] == ["4/5 images", "5/5 images"]
    assert pngs(tmp_path / "resumed") == pngs(tmp_path / "whole")


@pytest.mark.parametrize("line, words", [
    ("{not json", "Line 2 of"),
    ("[1, 2]", "is a JSON list, not an object"),
    ("[" * 100_000, "nested too deeply"),  # past the parser's stack: a RecursionError, not a traceback
    ('{"seed": ' + "9" * 5000 + "}", "integer string conversion"),  # past int_max_str_digits
    ('{"prompt": "x", "steps": "many"}', "Line 2 of"),
    ('{"prompt": "x", "width": 100, "height": 64}', "multiple of 8"),
    ('{"prompt": "x", "sampler_name": "Heun++ 9000"}', "Unknown sampler 'Heun++ 9000'"),
    ('{"prompt": "x", "override_settings": {"sd_model_checkpoint": "nope"}}', "does not offer (models: tiny-sd15"),
])
def test_a_bad_line_is_named_in_one_sentence_before_anything_runs(model, tmp_path, monkeypatch, capsys, line, words):
    jobs = _jobs_file(tmp_path / "jobs.jsonl", JOBS[:1], extra_lines=[line])
    code, out, err = run_cli(monkeypatch, capsys, "batch", jobs, "--out", str(tmp_path / "out"), "--model", model,
                             "--gpu", GPU)
    assert code == 2 and words in err and "Traceback" not in err, err
    assert err.startswith("lowvram: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # nothing made, not even the folder


def test_bad_batch_arguments_exit_2(model, tmp_path, monkeypatch, capsys):
    jobs = _jobs_file(tmp_path / "jobs.jsonl", JOBS[:1])
    (tmp_path / "afile").write_text("")
    for args, words in ((["batch", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o"), "--model", model],
                         "does not exist"),
                        (["batch", jobs, "--out", str(tmp_path / "afile"), "--model", model], "is a file"),
                        (["batch", jobs, "--out", str(tmp_path / "no" / "such" / "dir"), "--model", model],
                         "does not exist"),
                        (["batch", _jobs_file(tmp_path / "empty.jsonl", []), "--out", str(tmp_path / "o"),
                          "--model", model], "has no requests")):
        code, _, err = run_cli(monkeypatch, capsys, *args)
        assert code == 2 and words in err and err.count("\n") == 1, (args, err)
