"""The second image through `lowvram serve` vs a second `lowvram generate` process, on the CPU.

Why: the server keeps the model loaded, so from its second request on an image costs only denoising;
a `lowvram generate` process pays Python imports and the load every time. This measures both on a
real-size SD1.5 folder with random weights (tests/fixtures/real_sd15.py; or `--model DIR`), and the
server's own overhead per request: HTTP wall time minus the Session's time (`info.lowvram.seconds`),
i.e. JSON, queueing, PNG + base64 encoding, saving the PNG and the round trip over loopback.

    python bench/serve_overhead.py [--model DIR] [--size 128] [--steps 2] [--requests 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "src")
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fixtures"))
START_TIMEOUT_S = 600


def _env(tmp: str) -> dict:
    return dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), HF_HOME=os.path.join(tmp, "hf"))


def generate_process(model: str, size: int, steps: int, tmp: str) -> float:
    """Wall seconds of one whole `lowvram generate` process (imports, plan, load, denoise, write)."""
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "lowvram.cli", "generate", "a lighthouse", "--model", model, "--width", str(size),
                    "--height", str(size), "--steps", str(steps), "--seed", "1", "-o", os.path.join(tmp, "gen.png"),
                    "--quiet"], env=_env(tmp), capture_output=True, text=True, timeout=START_TIMEOUT_S)
    if r.returncode != 0:
        raise SystemExit(f"lowvram generate failed ({r.returncode}): {r.stderr[-3000:]}")
    return time.perf_counter() - t


def serve_requests(model: str, size: int, steps: int, n: int, tmp: str) -> list[dict]:
    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t_start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "lowvram.cli", "serve", "--model", model, "--port", str(port),
                             "--outputs", os.path.join(tmp, "outputs")], env=_env(tmp), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                requests.get(url + "/sdapi/v1/progress", timeout=2)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the server did not start")
                time.sleep(0.5)
        started = time.perf_counter() - t_start
        rows = []
        for k in range(n):
            t = time.perf_counter()
            r = requests.post(url + "/sdapi/v1/txt2img", json={"prompt": "a lighthouse", "width": size, "height": size,
                                                                "steps": steps, "seed": 1}, timeout=START_TIMEOUT_S)
            wall = time.perf_counter() - t
            r.raise_for_status()
            lv = json.loads(r.json()["info"])["lowvram"]
            rows.append({"request": k + 1, "wall_s": wall, "session_s": lv["seconds"], "load_s": lv["load_seconds"],
                         "overhead_s": wall - lv["seconds"], "reused": lv["reused"], "server_start_s": started})
        return rows
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a diffusers folder (default: build a real-size random SD1.5 in a temp folder)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--requests", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = a.model
        if model is None:
            from real_sd15 import build_real_sd15

            model = build_real_sd15(os.path.join(tmp, "sd15"))
        gen = [generate_process(model, a.size, a.steps, tmp) for _ in range(2)]
        rows = serve_requests(model, a.size, a.steps, a.requests, tmp)
    later = rows[1:]
    second = later[0]["wall_s"]
    result = {"size": a.size, "steps": a.steps, "generate_process_s": gen, "serve": rows,
              "second_image_saved_s": gen[1] - second,
              "overhead_mean_s": sum(r["overhead_s"] for r in later) / len(later)}
    walls = ", ".join(f"{r['wall_s']:.2f}" for r in later)
    print(f"lowvram generate process: {', '.join(f'{g:.1f}' for g in gen)} s; server start {rows[0]['server_start_s']:.1f} s, "
          f"request 1 {rows[0]['wall_s']:.1f} s (loads), then {walls} s")
    print(f"second image: {second:.2f} s through the server vs {gen[1]:.1f} s as a process "
          f"({result['second_image_saved_s']:.1f} s saved); server overhead per request {result['overhead_mean_s'] * 1000:.0f} ms")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
