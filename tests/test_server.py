"""`lowvram serve` over real HTTP: a uvicorn server in a subprocess on a free loopback port, driven the
way A1111's clients drive it (plain JSON, and the `webuiapi` package unchanged), with tiny random-weight
pipelines in a models/diffusers/ tree."""

import base64
import io
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import requests
from PIL import Image
from lowvram_serve import REQUEST_TIMEOUT_S, SRC, models_tree, start_server, stop_server

SMALL = {"width": 64, "height": 64, "steps": 1}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return models_tree(tmp_path_factory.mktemp("serve"), {"tiny-sd15": "sd15", "tiny-sdxl": "sdxl"}, lora_scale=4,
                       controlnets={"tiny-cn": "tiny-sd15"})


@pytest.fixture(scope="module")
def server(tree):
    s = start_server(tree, "--models-dir", str(tree / "models"))
    yield s
    stop_server(s)


def _png(size=(64, 64), color=(200, 40, 40)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _image(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_lists_models_from_the_models_dir_with_a1111_titles(server):
    models = server.get("/sdapi/v1/sd-models").json()
    assert [m["model_name"] for m in models] == ["tiny-sd15", "tiny-sdxl"]
    assert all(m["title"] == f"{m['model_name']} [{m['hash']}]" and len(m["hash"]) == 8 for m in models)
    assert server.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == models[0]["title"]
    assert [x["name"] for x in server.get("/sdapi/v1/loras").json()] == ["style"]
    assert "Euler a" in [s["name"] for s in server.get("/sdapi/v1/samplers").json()]
    assert "Automatic" in [s["label"] for s in server.get("/sdapi/v1/schedulers").json()]
    mem = server.get("/sdapi/v1/memory").json()
    assert mem["ram"]["total"] > 0 and "cuda" in mem


def test_txt2img_answers_in_a1111_shape_and_saves_the_image(server, tree):
    r = server.post("/sdapi/v1/txt2img", dict(SMALL, prompt="a red cat", negative_prompt="blur", seed=-1,
                                               some_field_a1111_has=True))
    assert r.status_code == 200, r.text
    body = r.json()
    info = json.loads(body["info"])
    assert info["seed"] == info["all_seeds"][0] and 0 <= info["seed"] < 2**32  # -1: random, and reported
    assert (info["width"], info["height"], info["steps"]) == (64, 64, 1)
    im = _image(body["images"][0])
    assert im.size == (64, 64)
    text = im.text["parameters"]
    assert text == info["infotexts"][0] and f"Seed: {info['seed']}" in text and "Negative prompt: blur" in text
    saved = info["saved_paths"][0]
    assert saved.startswith(str(tree / "outputs" / "txt2img-images")) and saved.endswith(f"-{info['seed']}.png")
    assert os.path.basename(saved).startswith("00000-")
    back = server.post("/sdapi/v1/png-info", {"image": body["images"][0]}).json()
    assert back["info"] == text and back["parameters"]["Seed"] == info["seed"]
    assert back["parameters"]["Negative prompt"] == "blur" and back["parameters"]["Size-1"] == 64


def test_bad_requests_get_one_sentence_and_no_traceback(server):
    cases = [
        (requests.post(server.url + "/sdapi/v1/txt2img", data="{not json", headers={"content-type": "application/json"},
                       timeout=30), 400, "not valid JSON"),
        (server.post("/sdapi/v1/txt2img", dict(SMALL, steps="many")), 422, "steps"),
        (server.post("/sdapi/v1/txt2img", dict(SMALL, steps=5000)), 422, "steps"),
        (server.post("/sdapi/v1/txt2img", dict(SMALL, width=100)), 400, "multiple of 8"),
        (server.post("/sdapi/v1/txt2img", dict(SMALL, override_settings={"sd_model_checkpoint": server.log.name})),
         404, "no model named"),
        (server.post("/sdapi/v1/txt2img", dict(SMALL, prompt="<lora:../../etc/passwd:1> a cat")), 404, "no LoRA"),
        (server.post("/sdapi/v1/options", {"sd_model_checkpoint": "/tmp"}), 404, "no model named"),
        (server.get("/lowvram/v1/plan", params={"model": "/etc/passwd"}), 404, "not by path"),
        (server.post("/sdapi/v1/img2img", dict(SMALL, init_images=["bm90IGFuIGltYWdl"])), 400, "not an image"),
        (server.post("/sdapi/v1/img2img", dict(SMALL, init_images=[_big_png()])), 400, "megapixels"),
        (server.get("/sdapi/v1/nothing-here"), 404, "no /sdapi/v1/nothing-here"),
    ]
    for r, status, words in cases:
        assert r.status_code == status, (words, r.status_code, r.text)
        body = r.json()
        assert set(body) == {"error", "detail"} and words in body["detail"], body
        assert "Traceback" not in r.text and body["detail"].count(". ") == 0


def _big_png() -> str:
    """A PNG that declares 5000 x 4000 pixels (20 MP, above the 16.8 MP cap) in a few kilobytes."""
    buf = io.BytesIO()
    Image.new("1", (5000, 4000)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_webuiapi_client_unchanged(server):
    import webuiapi

    api = webuiapi.WebUIApi(host="127.0.0.1", port=server.port)
    res = api.txt2img(prompt="a lighthouse", seed=7, cfg_scale=5, **SMALL)
    assert res.image.size == (64, 64) and res.info["seed"] == 7 and res.info["sampler_name"] == "Euler a"
    assert "Sampler: Euler a" in res.image.text["parameters"]
    out = api.img2img(images=[res.image], prompt="a lighthouse at night", denoising_strength=0.5, seed=7,
                      width=64, height=64, steps=2)
    assert out.image.size == (64, 64) and "Denoising strength: 0.5" in out.image.text["parameters"]
    assert api.png_info(out.image).info == out.image.text["parameters"]
    titles = api.util_get_model_names()
    api.util_set_model(titles[1])  # webuiapi lower-cases the name: the server matches any case
    assert api.util_get_current_model() == titles[1]
    api.util_set_model(titles[0])


def test_three_concurrent_requests_are_answered_in_order_with_a_lora(server):
    answers, lock = [], threading.Lock()

    def ask(k):
        prompt = "<lora:style:0.8> a cat" if k == 1 else "a cat"
        r = server.post("/sdapi/v1/txt2img", dict(SMALL, prompt=prompt, seed=100 + k))
        with lock:
            answers.append((k, r))

    threads = []
    for k in range(3):
        t = threading.Thread(target=ask, args=(k,))
        t.start()
        threads.append(t)
        time.sleep(0.5)  # submission order 0, 1, 2
    for t in threads:
        t.join(REQUEST_TIMEOUT_S)
    assert [k for k, _ in answers] == [0, 1, 2]
    for k, r in answers:
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        assert info["seed"] == 100 + k
        assert ("Lora hashes" in info["infotexts"][0]) == (k == 1)


def test_interrupt_ends_the_running_job_at_its_next_step(server):
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("r", server.post("/sdapi/v1/txt2img", dict(SMALL, steps=400))))
    t.start()
    deadline = time.monotonic() + REQUEST_TIMEOUT_S
    while time.monotonic() < deadline:
        p = server.get("/sdapi/v1/progress").json()
        if p["state"]["sampling_step"] >= 1:
            break
        time.sleep(0.2)
    assert p["state"]["sampling_steps"] == 400 and p["state"]["job_count"] == 1 and 0 < p["progress"] < 1
    preview = _image(p["current_image"])  # the latents projected to RGB: one pixel per latent cell
    assert preview.size[0] == preview.size[1] and preview.size[0] < 64
    server.post("/sdapi/v1/interrupt")
    t.join(REQUEST_TIMEOUT_S)
    info = json.loads(got["r"].json()["info"])
    assert got["r"].json()["images"] == [] and 1 <= info["interrupted_at_step"] < 400
    assert server.get("/sdapi/v1/progress").json()["state"]["job_count"] == 0


def test_model_switching_keeps_memory_flat(server):
    def run(name):
        r = server.post("/sdapi/v1/txt2img", dict(SMALL, override_settings={"sd_model_checkpoint": name}))
        assert r.status_code == 200, r.text
        assert f"Model: {name}" in json.loads(r.json()["info"])["infotexts"][0]

    run("tiny-sdxl")
    run("tiny-sd15")
    base = server.rss()
    for _ in range(5):
        run("tiny-sdxl")
        run("tiny-sd15")
    assert server.rss() <= base * 1.10, (base / 2**20, server.rss() / 2**20)


def test_lowvram_api_plans_and_models(server):
    plan = server.get("/lowvram/v1/plan", params={"model": "sdxl", "width": 768, "height": 768, "steps": 20}).json()
    assert plan["model"] == "sdxl" and plan["workload"]["width"] == 768 and plan["workload"]["steps"] == 20
    assert "fits" in plan and plan["machine"]["vram_bytes"] > 0
    rows = server.get("/lowvram/v1/models").json()
    assert [r["name"] for r in rows] == ["tiny-sd15", "tiny-sdxl"]
    assert all(r["fits"] and r["seconds_per_image"] > 0 for r in rows)
    assert rows[0]["architecture"] == "sd15"


def _edges_b64(tmp_path) -> str:
    from tiny_pipelines import edges_image

    edges_image(tmp_path / "edges.png")
    return base64.b64encode((tmp_path / "edges.png").read_bytes()).decode()


def test_controlnet_folders_are_found_and_matched_to_the_catalogue_models_they_fit(tmp_path):
    """The published ControlNets' configs (catalogue/configs) as folders in A1111's and ComfyUI's places:
    each fits its own model only; a damaged config or another class is not listed."""
    from lowvram.catalogue import MODELS
    from lowvram.catalogue.build import load_config
    from lowvram.server.controlnets import find_controlnets, misfit

    for sub, name, config in (("ControlNet", "cn-sd15", "sd15-controlnet-canny"),
                              ("controlnet", "cn-sdxl", "sdxl-controlnet-canny"),
                              ("controlnet", "cn-flux", "flux-dev-controlnet-canny")):
        (tmp_path / sub / name).mkdir(parents=True)
        (tmp_path / sub / name / "config.json").write_text(json.dumps(load_config(config)))
    (tmp_path / "controlnet" / "broken").mkdir()
    (tmp_path / "controlnet" / "broken" / "config.json").write_text("{not json")
    (tmp_path / "controlnet" / "a-unet").mkdir()
    (tmp_path / "controlnet" / "a-unet" / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    found = find_controlnets(str(tmp_path))
    assert [(c.name, c.class_name) for c in found] == [
        ("cn-sd15", "ControlNetModel"), ("cn-flux", "FluxControlNetModel"), ("cn-sdxl", "ControlNetModel")]
    fits = {c.name: [m for m in ("sd15", "sdxl", "flux-dev", "flux-schnell", "sd35-medium")
                     if misfit(c, MODELS[m], None) is None] for c in found}
    assert fits == {"cn-sd15": ["sd15"], "cn-sdxl": ["sdxl"], "cn-flux": ["flux-dev", "flux-schnell"]}
    assert "made for another model than sdxl (block_out_channels" in misfit(found[0], MODELS["sdxl"], None)
    assert "not sd35-medium" in misfit(found[0], MODELS["sd35-medium"], None)
    # the same folder name in A1111's and ComfyUI's places: both listed, the later one numbered
    from lowvram.server.models import Registry

    (tmp_path / "controlnet" / "cn-sd15").mkdir()
    (tmp_path / "controlnet" / "cn-sd15" / "config.json").write_text(json.dumps(load_config("sd15-controlnet-canny")))
    reg = Registry([], {}, find_controlnets(str(tmp_path)))
    assert list(reg.controlnets) == ["cn-sd15", "cn-flux", "cn-sd15-2", "cn-sdxl"]
    assert reg.controlnet("CN-SD15-2").path == str(tmp_path / "controlnet" / "cn-sd15")


def test_controlnets_are_listed_as_the_extension_lists_them_with_the_models_they_fit(server):
    titles = server.get("/controlnet/model_list").json()["model_list"]
    assert len(titles) == 1 and titles[0].startswith("tiny-cn [") and len(titles[0]) == len("tiny-cn [12345678]")
    assert server.get("/controlnet/module_list").json()["module_list"] == ["none"]
    assert server.get("/controlnet/settings").json() == {"control_net_unit_count": 1}
    assert server.get("/controlnet/version").json() == {"version": 2}
    # made from tiny-sd15's UNet: tiny-sdxl's cross-attention is wider, so it fits tiny-sd15 only
    assert server.get("/lowvram/v1/controlnets").json() == [
        {"name": "tiny-cn", "title": titles[0], "class_name": "ControlNetModel", "models": ["tiny-sd15"]}]
    assert "controlnet" in server.get("/sdapi/v1/scripts").json()["txt2img"]
    # the plan readout counts it, sized from the folder's own weights
    r = server.get("/lowvram/v1/readout",
                   params={"model": "tiny-sd15", "width": 64, "height": 64, "controlnet": "tiny-cn"})
    assert r.status_code == 200, r.text
    plan = r.json()["plan"]
    assert plan["workload"]["controlnet"] and plan["workload"]["controlnet_path"].endswith("ControlNet/tiny-cn")
    assert "controlnet" in [c["name"] for c in plan["components"]]
    plan = server.get("/lowvram/v1/plan", params={"model": "tiny-sd15", "width": 64, "height": 64,
                                                  "controlnet": titles[0]}).json()
    assert plan["workload"]["controlnet"] and "controlnet" in [c["name"] for c in plan["components"]]
    # a catalogue model, planned before it is installed: the tiny ControlNet does not fit the real SD1.5's widths
    r = server.get("/lowvram/v1/plan", params={"model": "sd15", "controlnet": "tiny-cn"})
    assert r.status_code == 400 and "made for another model than sd15" in r.json()["detail"], r.text


def test_webuiapi_controlnet_unit_unchanged_gets_a_controlled_image(server, tmp_path):
    import webuiapi

    api = webuiapi.WebUIApi(host="127.0.0.1", port=server.port)
    title = api.controlnet_model_list()[0]
    edges = Image.open(io.BytesIO(base64.b64decode(_edges_b64(tmp_path))))
    unit = webuiapi.ControlNetUnit(image=edges, module="none", model=title, weight=1.5)
    res = api.txt2img(prompt="a lighthouse", seed=3, cfg_scale=5, controlnet_units=[unit], **SMALL)
    assert res.image.size == (64, 64)
    text = res.image.text["parameters"]
    assert (f'ControlNet 0: "Module: none, Model: {title}, Weight: 1.5, Resize Mode: Resize and Fill, '
            'Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: False, Control Mode: Balanced"') in text
    fields = server.post("/sdapi/v1/png-info", {"image": webuiapi.raw_b64_img(res.image)}).json()["parameters"]
    assert fields["ControlNet 0"].startswith("Module: none, Model: tiny-cn")
    # a fresh alwayson_scripts: webuiapi's default dict is shared between calls and keeps the unit it was given
    plain = api.txt2img(prompt="a lighthouse", seed=3, cfg_scale=5, alwayson_scripts={}, **SMALL)
    assert "ControlNet" not in plain.image.text["parameters"]
    assert list(plain.image.getdata()) != list(res.image.getdata())  # the ControlNet changed the image
    # guidance_end 0.5 of one step: diffusers keeps the ControlNet out of that step, so the image is the plain one
    late = webuiapi.ControlNetUnit(image=edges, module="none", model=title, weight=1.5, guidance_end=0.5)
    half = api.txt2img(prompt="a lighthouse", seed=3, cfg_scale=5, controlnet_units=[late], alwayson_scripts={},
                       **SMALL)
    assert "Guidance End: 0.5" in half.image.text["parameters"]
    assert list(half.image.getdata()) == list(plain.image.getdata())


def test_controlnet_units_lowvram_cannot_run_get_one_sentence(server, tmp_path):
    edges = _edges_b64(tmp_path)

    def body(*units, **extra):
        return dict(SMALL, prompt="x", alwayson_scripts={"controlnet": {"args": list(units)}}, **extra)

    unit = {"image": edges, "model": "tiny-cn", "module": "none", "weight": 1.0}
    cases = [
        (body(dict(unit, module="canny")), "preprocessor 'canny'"),
        (body(unit, dict(unit, weight=0.5)), "2 ControlNet units are enabled"),
        (body(dict(unit, model="control_v11p_sd15_canny [d14c016b]")), "no ControlNet named"),
        (body(dict(unit, image="bm90IGFuIGltYWdl")), "not an image"),
        (body(dict(unit, image="")), "has no image"),
        (body(dict(unit, weight="strong")), "weight 'strong'"),
        (body(dict(unit, guidance_start=0.8, guidance_end=0.2)), "not below"),
        (body(dict(unit, control_mode="ControlNet is more important")), "control_mode"),
        (body(unit, override_settings={"sd_model_checkpoint": "tiny-sdxl"}), "made for another model"),
        ({**SMALL, "alwayson_scripts": {"controlnet": {"args": "tiny-cn"}}}, '{"args"'),
    ]
    responses = [(server.post("/sdapi/v1/txt2img", b), words) for b, words in cases]
    responses.append((server.post("/sdapi/v1/img2img", body(unit, init_images=[edges])), "txt2img only"))
    responses.append((server.get("/lowvram/v1/readout", params={"model": "tiny-sdxl", "controlnet": "tiny-cn"}),
                      "made for another model"))
    responses.append((server.get("/lowvram/v1/readout", params={"model": "tiny-sd15", "controlnet": "nope"}),
                      "no ControlNet named"))
    for r, words in responses:
        assert r.status_code == 400, (words, r.status_code, r.text)
        detail = r.json()["detail"]
        assert words in detail and "Traceback" not in r.text and detail.count(". ") == 0, (words, detail)
    # disabled and empty units (A1111's UI sends its unused slots) are no ControlNet at all
    # (nor is another extension's script, which A1111 would run and this server ignores)
    quiet = body(dict(unit, enabled=False), {"model": "None", "image": ""})
    quiet = server.post("/sdapi/v1/txt2img", dict(quiet, alwayson_scripts={**quiet["alwayson_scripts"],
                                                                           "ADetailer": {"args": [True]}}))
    assert quiet.status_code == 200 and "ControlNet" not in json.loads(quiet.json()["info"])["infotexts"][0]


@pytest.fixture(scope="module")
def guarded(tree):
    s = start_server(tree, "--model", str(tree / "models" / "diffusers" / "tiny-sd15"), "--api-auth", "ann:secret",
               "--queue-size", "1", auth=("ann", "secret"))
    yield s
    stop_server(s)


def test_auth_queue_limit_and_event_stream(guarded):
    for auth in (None, ("ann", "wrong")):
        r = guarded.get("/sdapi/v1/sd-models", auth=auth)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic") and "detail" in r.json()
    assert guarded.get("/sdapi/v1/sd-models").json()[0]["model_name"] == "tiny-sd15"
    long = guarded.post("/lowvram/v1/txt2img", dict(SMALL, steps=400))
    assert long.status_code == 202, long.text
    deadline = time.monotonic() + REQUEST_TIMEOUT_S
    while guarded.get(f"/lowvram/v1/jobs/{long.json()['id']}").json()["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    queued = guarded.post("/lowvram/v1/txt2img", dict(SMALL, seed=9))
    assert queued.status_code == 202 and queued.json()["queue_position"] == 1
    full = guarded.post("/sdapi/v1/txt2img", SMALL)
    assert full.status_code == 503 and "queue is full" in full.json()["detail"]
    events = []
    with guarded.get(f"/lowvram/v1/jobs/{queued.json()['id']}/events", stream=True) as stream:
        guarded.post("/sdapi/v1/interrupt")
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                events.append(line[7:])
            elif line.startswith("data: ") and events[-1] == "done":
                final = json.loads(line[6:])
    assert events[0] == "progress" and events[-1] == "done"
    assert final["seeds"] == [9] and final["saved_paths"]
    assert guarded.get(f"/lowvram/v1/jobs/{long.json()['id']}").json()["state"] == "interrupted"


def test_bad_serve_flags_exit_2_with_one_sentence(tmp_path):
    env = dict(os.environ, PYTHONPATH=SRC, HF_HOME=str(tmp_path / "hf"))
    r = subprocess.run([sys.executable, "-m", "lowvram.cli", "serve", "--api-auth", "nopassword"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "USER:PASS" in r.stderr and "Traceback" not in r.stderr


def test_body_cap_refuses_a_large_body_while_it_arrives():
    """The cap holds for chunked bodies that declare no length (checked on the ASGI middleware itself)."""
    import asyncio

    from lowvram.server.bodylimit import BodyLimit

    async def app(scope, receive, send):
        raise AssertionError("the app must not see a body over the cap")

    chunks = [{"type": "http.request", "body": b"x" * 600, "more_body": True}] * 2
    sent = []

    async def receive():
        return chunks.pop(0)

    async def send(message):
        sent.append(message)

    asyncio.run(BodyLimit(app, max_bytes=1000)({"type": "http", "headers": []}, receive, send))
    assert sent[0]["status"] == 413 and b"larger than the server accepts" in sent[1]["body"]
