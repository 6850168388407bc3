"""Pulling catalogue models from the page's API (server/pull_api.py): a real `lowvram serve` (uvicorn in a
subprocess, tests/fixtures/lowvram_serve.py) pulls from a local fake hub (HF_ENDPOINT) — never the real one."""

import hashlib
import json
import os
import shutil
import time

import gguf
import pytest
import requests
from fake_hub import FakeHub
from lowvram_serve import REQUEST_TIMEOUT_S, start_server, stop_server
from tiny_pipelines import build_pipeline, component_state

import layouts as L
from checkpoints import write_gguf
from lowvram.catalogue import MODELS

AUTH = ("lv", "secret")
PULL_TIMEOUT_S = 120  # a few MB from loopback, on a loaded 2-core machine
SLOW_BYTES_PER_S = 400_000  # the fake hub's pace while progress and cancel are watched: the tiny SD1.5 takes ~15 s
SD15 = MODELS["sd15"]
FLUX = MODELS["flux-dev"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The tiny SD1.5 repo, and the tiny flux-dev repo with its GGUF repo (Q8_0 only, what tests/test_pull_gguf.py
    writes); SDXL is missing, so its pull fails."""
    root = tmp_path_factory.mktemp("pull-repo")
    for arch in ("sd15", "flux-dev"):
        build_pipeline(arch, str(root / arch))
        for junk in ("_tok1", "_tok2"):
            shutil.rmtree(root / arch / junk, ignore_errors=True)
    ggufs = root / "gguf"
    ggufs.mkdir()
    write_gguf(ggufs / FLUX.gguf.filename("Q8_0"), L.flux_to_bfl(component_state(str(root / "flux-dev"), "transformer")),
               gguf.GGMLQuantizationType.Q8_0)
    with FakeHub({SD15.hf_repo: str(root / "sd15"), FLUX.hf_repo: str(root / "flux-dev"), FLUX.gguf.repo: str(ggufs)}) as h:
        yield h


@pytest.fixture(scope="module")
def server(hub, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pull-serve")
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_ENABLE_HF_TRANSFER": "0"}
    s = start_server(tmp, "--api-auth", ":".join(AUTH), auth=AUTH, env=env)
    s.hf = tmp / "hf"
    yield s
    stop_server(s)


def _events(server, pull_id):
    """The pull's server-sent events as (event, data) until the stream ends."""
    out, event = [], None
    with server.get(f"/lowvram/v1/pulls/{pull_id}/events", stream=True, timeout=PULL_TIMEOUT_S) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: "):
                out.append((event, json.loads(line[len("data: "):])))
    return out


def _wait(server, pull_id, until) -> dict:
    deadline = time.monotonic() + PULL_TIMEOUT_S
    while time.monotonic() < deadline:
        s = server.get(f"/lowvram/v1/pulls/{pull_id}").json()
        if until(s):
            return s
        time.sleep(0.1)
    raise AssertionError(f"pull {pull_id} never got there: {s}")


def _catalogue(server) -> dict:
    return {c["name"]: c for c in server.get("/lowvram/v1/catalogue").json()}


def _complete_blobs(hf) -> None:
    """Every blob in the cache's final place is whole (the fake hub's ETag, its file name, is the sha1 of
    the content); a half-written one exists only as huggingface_hub's `.incomplete`."""
    for d, _, fs in os.walk(hf):
        if os.path.basename(d) != "blobs":
            continue
        for f in fs:
            if not f.endswith(".incomplete"):
                data = open(os.path.join(d, f), "rb").read()
                assert hashlib.sha1(data).hexdigest() == f, f"{f} is half-written in the cache's final place"


def test_pull_refused_without_auth_and_for_bad_names(server):
    r = requests.post(server.url + "/lowvram/v1/pulls", json={"model": "sd15"}, timeout=REQUEST_TIMEOUT_S)
    assert r.status_code == 401
    for body, status, words in (({"model": "sd9"}, 400, "Unknown model"),
                                ({"model": "sd15", "gguf": "auto"}, 400, "no published GGUF quants"),
                                ({"model": "sd15", "quality": "best"}, 400, "Unknown quality")):
        r = server.post("/lowvram/v1/pulls", body)
        assert r.status_code == status and words in r.json()["detail"], r.text
    assert server.get("/lowvram/v1/pulls/nope").status_code == 404


def test_catalogue_names_what_pull_fetches_for_this_machine(server):
    rows = _catalogue(server)
    assert rows["sd15"]["pull"]["weights"] == "full weights" and rows["sd15"]["installed"] == []
    # On the server's RTX 2060 the full Flux weights would be re-read from disk every step: a quant, as
    # `lowvram pull flux-dev --quality balanced` chooses it.
    assert rows["flux-dev"]["pull"]["weights"].startswith("GGUF "), rows["flux-dev"]["pull"]
    assert rows["flux-dev"]["pull"]["command"] == "lowvram pull flux-dev --quality balanced"


def test_a_failing_pull_says_its_one_sentence(server):
    r = server.post("/lowvram/v1/pulls", {"model": "sdxl"})  # not on the fake hub: 404
    assert r.status_code == 202, r.text
    s = _wait(server, r.json()["id"], lambda s: s["state"] not in ("queued", "downloading"))
    assert s["state"] == "failed" and "was not found on the hub" in s["error"], s
    assert "\n" not in s["error"] and "Traceback" not in s["error"]


def test_pull_progress_cancel_pull_again_then_listed_without_restart(server, hub):
    hub.bytes_per_second = SLOW_BYTES_PER_S
    try:
        first = server.post("/lowvram/v1/pulls", {"model": "sd15"})
        assert first.status_code == 202 and first.json()["weights"] == "full weights", first.text
        joined = server.post("/lowvram/v1/pulls", {"model": "sd15"})  # the same model: joins the first
        assert joined.json()["id"] == first.json()["id"]
        pull_id = first.json()["id"]
        s = _wait(server, pull_id, lambda s: s["bytes_done"] > 0)
        assert s["state"] == "downloading" and s["bytes_total"] > s["bytes_done"], s
        assert _catalogue(server)["sd15"]["pulling"]["id"] == pull_id
        server.post(f"/lowvram/v1/pulls/{pull_id}/cancel")
        s = _wait(server, pull_id, lambda s: s["state"] != "downloading")
        assert s["state"] == "cancelled" and s["bytes_done"] < s["bytes_total"], s
        _complete_blobs(server.hf)
        assert "sd15" not in {m["name"] for m in server.get("/lowvram/v1/models").json()}
        # Pulled again, it fetches only what the cancelled pull did not finish; its progress rises to the
        # total and the model is then served.
        again = server.post("/lowvram/v1/pulls", {"model": "sd15"}).json()
        assert again["id"] != pull_id
        events = _events(server, again["id"])
    finally:
        hub.bytes_per_second = None
    kinds = [e for e, _ in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) <= {"progress"}, events[-1]
    done = [d["bytes_done"] for _, d in events]
    assert done == sorted(done) and len(set(done)) >= 3, done  # rises in steps
    last = events[-1][1]
    assert last["bytes_done"] == last["bytes_total"] > 0 and last["files_done"] == last["files_total"] > 0, last
    assert last["eta_seconds"] == 0 and last["bytes_per_second"] > 0
    assert last["bytes_cached"] > 0  # the files the cancelled pull finished
    _complete_blobs(server.hf)
    models = {m["name"]: m for m in server.get("/lowvram/v1/models").json()}
    assert models["sd15"]["source"] == "hf-cache" and models["sd15"]["fits"], models["sd15"]
    row = _catalogue(server)["sd15"]
    assert row["installed"] == ["diffusers"] and row["served"] and row["pulling"] is None
    assert "sd15" in {m["model_name"] for m in server.get("/sdapi/v1/sd-models").json()}


def test_the_page_pull_of_flux_fetches_the_quant_chosen_for_this_machine(server, hub):
    """Flux's full weights do not fit the server's RTX 2060 well: its Pull fetches the GGUF quant (and the base
    repo without its transformer weights), as `lowvram pull flux-dev --quality balanced` would."""
    r = server.post("/lowvram/v1/pulls", {"model": "flux-dev"})
    assert r.status_code == 202 and r.json()["weights"] == "GGUF Q8_0", r.text
    s = _wait(server, r.json()["id"], lambda s: s["state"] not in ("queued", "downloading"))
    assert s["state"] == "done" and s["path"].endswith(FLUX.gguf.filename("Q8_0")), s
    assert s["bytes_done"] == s["bytes_total"] > 0 and s["files_done"] == s["files_total"], s
    got = {x.split("/resolve/", 1)[1].split("/", 1)[1] for x in hub.requests
           if x.startswith("GET /") and "/resolve/" in x and FLUX.gguf.repo in x}
    assert got == {FLUX.gguf.filename("Q8_0")}
    assert not [x for x in hub.requests if x.startswith(f"GET /{FLUX.hf_repo}/resolve/") and "transformer/diffusion_" in x]
    models = {m["name"]: m for m in server.get("/lowvram/v1/models").json()}
    assert models["flux-dev-Q8_0"]["source"] == "hf-cache" and models["flux-dev-Q8_0"]["architecture"] == "flux-dev"
    assert _catalogue(server)["flux-dev"]["installed"] == ["GGUF Q8_0"]


def test_stopping_the_server_cancels_its_running_pull(server, hub):
    """Last in this file: the server stops (Ctrl-C / SIGTERM) within its pull-cancel wait, not after the download."""
    from lowvram.server.pulls import JOIN_SECONDS

    hub.bytes_per_second = SLOW_BYTES_PER_S / 10  # the full flux-dev weights would take minutes
    try:
        r = server.post("/lowvram/v1/pulls", {"model": "flux-dev", "quality": "lossless"})
        assert r.status_code == 202 and r.json()["weights"] == "full weights", r.text
        _wait(server, r.json()["id"], lambda s: s["state"] == "downloading")
        started = time.monotonic()
        stop_server(server)
        assert server.proc.returncode != -9 and time.monotonic() - started < JOIN_SECONDS + 15, server.proc.returncode
    finally:
        hub.bytes_per_second = None
