"""The web page of `lowvram serve` in a real browser (headless Chromium driven by Playwright), on a
server started as tests/test_server.py starts it (tests/fixtures/lowvram_serve.py), with a tiny random-weight SD1.5
pipeline; plus the page's own routes over plain HTTP (gallery, saved files by listed name only, the plan readout)."""

import os
import re
import shutil

import pytest
import requests
from fake_hub import FakeHub
from lowvram_serve import models_tree, start_server, stop_server
from tiny_pipelines import build_pipeline

from lowvram.catalogue import MODELS

CHROMIUM = "/usr/bin/chromium"  # Debian's package; .ci/run installs it (browser downloads are not possible here)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
UI_TIMEOUT_MS = 60_000  # one step of the tiny pipeline on a loaded 2-core machine, with margin
RUN_TIMEOUT_MS = 180_000  # a first run loads the model
# The screenshots land in the test's temporary folder; with LOWVRAM_SCREENSHOTS=docs/screenshots they are
# copied there too (how the README's were made), so an ordinary run leaves the checkout untouched.
SCREENSHOTS_ENV = "LOWVRAM_SCREENSHOTS"
VIEWPORT = {"width": 1280, "height": 860}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return models_tree(tmp_path_factory.mktemp("page"), {"tiny-sd15": "sd15"}, controlnets={"tiny-cn": "tiny-sd15"})


@pytest.fixture(scope="module")
def server(tree):
    s = start_server(tree, "--models-dir", str(tree / "models"))
    yield s
    stop_server(s)


def test_page_routes_serve_the_page_the_readout_and_only_listed_outputs(server, tree):
    page = server.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "/static/app.js" in page.text
    assert server.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert server.get("/static/../app.py").status_code == 404
    r = server.get("/lowvram/v1/readout", params={"model": "tiny-sd15", "width": 512, "height": 512, "loras": "style"})
    assert r.status_code == 200, r.text
    plan = r.json()["plan"]
    assert plan["model"] == "sd15" and plan["workload"]["loras"] == 1 and plan["workload"]["lora_bytes"][0] > 0
    flux = server.get("/lowvram/v1/readout", params={"model": "flux-dev", "quality": "lossless"}).json()
    assert flux["plan"]["model"] == "flux-dev" and all(a["policy"] != "lossless" for a in flux["alternatives"])
    for params, status, words in (({"model": "tiny-sd15", "loras": "../x"}, 404, "no LoRA"),
                                  ({"model": "tiny-sd15", "width": 100}, 400, "multiple of 8"),
                                  ({"model": "tiny-sd15", "quality": "best"}, 400, "Unknown quality")):
        bad = server.get("/lowvram/v1/readout", params=params)
        assert bad.status_code == status and words in bad.json()["detail"], bad.text
    catalogue = {c["name"]: c for c in server.get("/lowvram/v1/catalogue").json()}
    assert catalogue["flux-dev"]["installed"] == [] and not catalogue["flux-dev"]["served"]
    # A saved image is listed with its parameters and served by its listed name; nothing else is.
    done = server.post("/sdapi/v1/txt2img", {"prompt": "a gallery test", "seed": 5, "width": 64, "height": 64, "steps": 1})
    assert done.status_code == 200, done.text
    items = server.get("/lowvram/v1/gallery").json()
    assert items[0]["parameters"]["Prompt"] == "a gallery test" and items[0]["parameters"]["Seed"] == 5
    name = items[0]["name"]
    assert re.fullmatch(r"txt2img-images/\d{4}-\d\d-\d\d/\d{5}-5\.png", name)
    got = server.get(f"/lowvram/v1/outputs/{name}", params={"download": "true"})
    assert got.status_code == 200 and got.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert "attachment" in got.headers["content-disposition"]
    (tree / "outputs" / "secret.png").write_bytes(b"not listed")
    for probe in ("secret.png", "txt2img-images/../secret.png", "..%2Fsecret.png", "%2Fetc%2Fpasswd"):
        r = requests.get(f"{server.url}/lowvram/v1/outputs/{probe}", timeout=30)
        assert r.status_code == 404 and "Traceback" not in r.text, (probe, r.status_code)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: install Debian's chromium package "
                    "(.ci/run does) to run the browser test")
def test_page_in_a_browser_plans_generates_shows_the_gallery_and_stops(tree, tmp_path):
    from playwright.sync_api import expect

    expect.set_options(timeout=UI_TIMEOUT_MS)

    # A fake hub with a tiny SD1.5 for the Models tab's Pull button (tests/test_server_pull.py tests pulls in full).
    repo = tmp_path / "hub-sd15"
    build_pipeline("sd15", str(repo))
    shots = tmp_path / "shots"
    shots.mkdir()
    with FakeHub({MODELS["sd15"].hf_repo: str(repo)}) as hub:
        server = start_server(tree, "--models-dir", str(tree / "models"), env={"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1"})
        _browse(server, shots)
    names = ("page-plan.png", "page-running.png", "page-gallery.png")
    assert all((shots / f).stat().st_size > 0 for f in names)
    if os.environ.get(SCREENSHOTS_ENV):
        os.makedirs(os.environ[SCREENSHOTS_ENV], exist_ok=True)
        for f in names:
            shutil.copy(shots / f, os.path.join(os.environ[SCREENSHOTS_ENV], f))


def _browse(server, shots):
    from playwright.sync_api import expect, sync_playwright

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=UI_TIMEOUT_MS)
            try:
                page = browser.new_page(viewport=VIEWPORT)
                page.set_default_timeout(UI_TIMEOUT_MS)
                _drive(page, server, shots)
                _pull(page)
                # The server goes away: the page says so instead of hanging.
                stop_server(server)
                expect(page.locator("#banner")).to_contain_text("unreachable", timeout=UI_TIMEOUT_MS)
            finally:
                browser.close()
    finally:
        stop_server(server)


def _drive(page, server, shots):
    from playwright.sync_api import expect

    page.goto(server.url + "/")
    readout = page.locator("#readout")
    expect(readout.locator(".verdict")).to_have_text("Fits")
    expect(page.locator("#model")).to_have_value("tiny-sd15")
    # Will Flux fit this card? Picked from the catalogue, planned before anything is installed.
    page.select_option("#model", "flux-dev")
    expect(readout).to_contain_text("flux-dev · 1024×1024")
    expect(page.locator("#generate")).to_have_text(re.compile("not installed"))
    assert page.locator("#readout .comp").count() == 4  # transformer, two text encoders, VAE
    page.screenshot(path=str(shots / "page-plan.png"))
    # The plan follows the form: a smaller size predicts a faster image (512 px is among the shipped
    # answers, so no simulation runs here).
    before = page.locator("#plan-simage").inner_text()
    page.fill("#width", "512")
    page.fill("#height", "512")
    expect(readout).to_contain_text("flux-dev · 512×512")
    after = page.locator("#plan-simage").inner_text()
    assert after != before, (before, after)
    # An impossible size is one sentence in the readout.
    page.select_option("#model", "tiny-sd15")
    page.fill("#width", "100")
    expect(readout.locator(".problem")).to_contain_text("multiple of 8")
    # Generate a small image and find it, with its parameters, in the gallery.
    for sel, value in (("#width", "64"), ("#height", "64"), ("#steps", "2")):
        page.fill(sel, value)
    page.uncheck("#seed-random")
    page.fill("#seed", "42")
    page.fill("#prompt", "a lighthouse at dawn")
    # with the ControlNet made for this model and its control image, asked of the plan readout
    from tiny_pipelines import edges_image

    edges_image(shots.parent / "edges.png")
    page.click("#cn-box summary")
    # (the readout's plan itself is tests/test_server.py's: a new size is simulated, slow on a loaded machine)
    with page.expect_request(lambda r: "/lowvram/v1/readout" in r.url and "controlnet=tiny-cn" in r.url):
        page.select_option("#cn-model", "tiny-cn")
    page.set_input_files("#cn-file", str(shots.parent / "edges.png"))
    expect(page.locator("#cn-img")).to_be_visible()
    page.fill("#cn-weight", "0.8")
    page.click("#generate")
    _wait_for_end(page, "Done")
    expect(page.locator("#run-result table")).to_contain_text("predicted")
    page.click("button.tab[data-tab=gallery]")
    thumb = page.locator(".thumb").first
    expect(thumb).to_contain_text("a lighthouse at dawn")
    thumb.click()
    params = page.locator("#detail-params")
    expect(params).to_contain_text("a lighthouse at dawn")
    expect(params).to_contain_text("42")
    expect(page.locator("#detail .infotext")).to_contain_text("ControlNet 0: \"Module: none, Model: tiny-cn [")
    page.screenshot(path=str(shots / "page-gallery.png"))
    # Its parameters go back into the form.
    page.click("#send-to-prompt")
    expect(page.locator("#prompt")).to_have_value("a lighthouse at dawn")
    expect(page.locator("#seed")).to_have_value("42")
    expect(page.locator("#cn-model")).to_have_value("tiny-cn")
    expect(page.locator("#cn-weight")).to_have_value("0.8")
    # A long run shows progress and a preview, then Stop ends it.
    page.fill("#steps", "400")
    page.click("#generate")
    expect(page.locator("#run-state")).to_contain_text(re.compile(r"Step [1-9]"), timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#run-preview")).to_be_visible()
    expect(page.locator("#run-meta")).to_contain_text("ETA")
    page.screenshot(path=str(shots / "page-running.png"))
    page.click("#stop")
    _wait_for_end(page, "Stopped at step")
    assert server.get("/sdapi/v1/progress").json()["state"]["job_count"] == 0


def _pull(page):
    """The Models tab's Pull button on one catalogue row: the bar runs to done, the row says installed and the
    model joins the picker, without a restart."""
    from playwright.sync_api import expect

    page.click("button.tab[data-tab=models]")
    row = page.locator('#catalogue-table tr[data-model="sd15"]')
    expect(row.locator(".pull-what")).to_have_text("full weights")
    row.locator("button.pull-start").click()
    expect(row.locator(".pull-done")).to_contain_text("installed", timeout=RUN_TIMEOUT_MS)
    expect(row.locator("td.installed")).to_contain_text("installed")
    expect(page.locator('#model optgroup[label="On this server"] option[value="sd15"]')).to_have_count(1)


def _wait_for_end(page, want: str) -> None:
    """Wait for the run to end, and say the page's sentence when it ended otherwise."""
    from playwright.sync_api import expect

    state = page.locator("#run-state")
    expect(state).to_have_text(re.compile("Done|Failed|Stopped|Connection lost"), timeout=RUN_TIMEOUT_MS)
    assert state.inner_text().startswith(want), (state.inner_text(), page.locator("#banner").inner_text())
