"""ControlNet through `lowvram serve`: the plan readout's latency with and without a ControlNet, and a
txt2img request with and without one (A1111's extension format), on the tests' tiny SD1.5 tree.

Why: the page re-plans as the form changes; a ControlNet adds a component the planner simulates once per
size (then caches), and a request that adds or drops the ControlNet reloads the pipeline with it.

    python bench/controlnet_serve.py [--steps 4]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import pathlib
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fixtures"))
READOUT_SIZE = 512  # a size whose plan without ControlNet is among the shipped answers (no simulation)
IMAGE_SIZE = 64  # the tiny pipeline's images


def main() -> None:
    from lowvram_serve import models_tree, start_server, stop_server
    from tiny_pipelines import edges_image

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="lowvram-cn-bench"))
    os.environ["LOWVRAM_CACHE_DIR"] = str(tmp / "cache")  # a cold simulation cache: the first readout simulates
    models_tree(tmp, {"tiny-sd15": "sd15"}, controlnets={"tiny-cn": "tiny-sd15"})
    edges_image(tmp / "edges.png", IMAGE_SIZE)
    image = base64.b64encode((tmp / "edges.png").read_bytes()).decode()
    server = start_server(tmp, "--models-dir", str(tmp / "models"))
    try:
        plan = {"model": "tiny-sd15", "width": READOUT_SIZE, "height": READOUT_SIZE}
        for label, params in (("readout, no ControlNet", plan),
                              ("readout, ControlNet, first (cold cache)", dict(plan, controlnet="tiny-cn")),
                              ("readout, ControlNet, again", dict(plan, controlnet="tiny-cn"))):
            start = time.perf_counter()
            r = server.get("/lowvram/v1/readout", params=params)
            r.raise_for_status()
            print(f"{label}: {time.perf_counter() - start:.3f} s")
        body = {"prompt": "a lighthouse", "seed": 1, "width": IMAGE_SIZE, "height": IMAGE_SIZE, "steps": args.steps}
        unit = {"image": image, "model": "tiny-cn", "module": "none", "weight": 1.0}
        with_cn = dict(body, alwayson_scripts={"controlnet": {"args": [unit]}})
        for label, b in (("txt2img, no ControlNet, first (load)", body), ("txt2img, no ControlNet", body),
                         ("txt2img, ControlNet, first (reload)", with_cn), ("txt2img, ControlNet", with_cn)):
            start = time.perf_counter()
            r = server.post("/sdapi/v1/txt2img", b)
            r.raise_for_status()
            wall = time.perf_counter() - start
            lv = json.loads(r.json()["info"])["lowvram"]
            print(f"{label}: {wall:.3f} s over HTTP; denoise+decode {lv['run_seconds']:.3f} s, load "
                  f"{lv['load_seconds']:.3f} s")
    finally:
        stop_server(server)


if __name__ == "__main__":
    main()
