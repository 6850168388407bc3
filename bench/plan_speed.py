"""How long planning takes, cold (empty user cache; the package's shipped answers), warm, and with
nothing shipped (every simulation run), as a user runs it.

    python bench/plan_speed.py [--json out.json] [--skip-gpus]

Targets (planner issue): `lowvram plan flux-dev` <= 3 s cold and <= 1 s warm; `lowvram gpus` for all
models and cards <= 20 s cold. Each command runs in a fresh process (imports included), as a user sees it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "plan flux-dev": ["plan", "flux-dev", "--gpu", "RTX 4060"],
    "plan sdxl": ["plan", "sdxl", "--gpu", "RTX 3060"],
    "gpus (all models x all cards)": ["gpus"],
}


def run(args: list[str], cache: str, shipped: bool = True) -> float:
    env = dict(os.environ, LOWVRAM_CACHE_DIR=cache, LOWVRAM_NO_SHIPPED="0" if shipped else "1")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "lowvram.cli", *args], env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"lowvram {' '.join(args)} failed: {r.stderr.strip()}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--skip-gpus", action="store_true")
    a = ap.parse_args()
    rows = []
    for name, args in COMMANDS.items():
        if a.skip_gpus and args[0] == "gpus":
            continue
        with tempfile.TemporaryDirectory() as cache:
            cold = run(args, cache)
            warm = run(args, cache)
        with tempfile.TemporaryDirectory() as cache:
            unshipped = run(args, cache, shipped=False)
        rows.append({"command": "lowvram " + " ".join(args), "cold_s": cold, "warm_s": warm, "simulating_s": unshipped})
    print(f"date {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores")
    print("| command | cold (s) | warm (s) | nothing shipped: simulating (s) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| `{r['command']}` | {r['cold_s']:.2f} | {r['warm_s']:.2f} | {r['simulating_s']:.2f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
