"""CPU benchmark of the runtime: hook overhead with everything resident, and peak RSS when loading a
large checkpoint straight into fp8 versus loading it in bf16 first.

    python bench/cpu_overhead.py [--gb 3] [--json out.json]

Targets (runtime issue): overhead <= 5 % with everything resident; peak RSS of the fp8 load <= fp8 size + 10 %.
RSS figures are the growth of the process's peak RSS over its RSS after imports (torch alone is ~400 MB).
Load *speed* into every precision, against the usual load-then-convert way: bench/load_speed.py.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fixtures"))

MID_FLUX = dict(num_layers=2, num_single_layers=4, attention_head_dim=64, num_attention_heads=4,
                joint_attention_dim=256, pooled_projection_dim=256, axes_dims_rope=[16, 24, 24], in_channels=64)


def overhead(repeats: int) -> dict:
    from lowvram.catalogue import MODELS, build_component
    from lowvram.contract import ComponentPlan, Machine, Plan, Workload
    from lowvram.runtime.executor import PlanExecutor
    from lowvram.simulate import SimRequest
    from lowvram.simulate.run import build_inputs

    spec = MODELS["flux-dev"]
    comp = spec.component("transformer")
    torch.manual_seed(0)
    m = build_component(comp, "cpu", dtype=torch.float32, config_overrides=MID_FLUX)
    fn, kw = build_inputs(m, spec, comp, SimRequest(batch=1, width=256, height=256, dtype="fp32"))

    def once() -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            fn(**kw)
        return time.perf_counter() - t0

    def plan_with(placement: str) -> Plan:
        cp = ComponentPlan("transformer", "denoiser", 0, 0, placement, "fp32", "fp32", 0, resident_units=0)
        return Plan("flux-dev", "lossless", True, Workload(256, 256), Machine("cpu", 1 << 40, 1 << 40, 1e10, 1.0),
                    (cp,), "sdpa", 0, "none", 0, 1 << 40, 0, 0, 0, 0)

    # Interleave the three ways, so machine noise hits them alike; medians over the rounds.
    times = {"plain": [], "resident": [], "streamed": []}
    once()
    for _ in range(repeats):
        times["plain"].append(once())
        for placement in ("resident", "streamed"):
            ex = PlanExecutor(plan_with(placement), {"transformer": m}, "cpu").apply()
            once()  # the first call records the unit order
            times[placement].append(once())
            ex.remove()
    plain, resident, streamed = (statistics.median(times[k]) for k in ("plain", "resident", "streamed"))
    return {"plain_s": plain, "resident_s": resident, "streamed_all_s": streamed,
            "resident_overhead_pct": 100 * (resident / plain - 1), "streamed_overhead_pct": 100 * (streamed / plain - 1)}


WIDTH = 4096


def write_checkpoint(path: str, gb: float) -> int:
    """Random bf16 Linear weights (a stack of 4096x4096 layers), written tensor by tensor."""
    from lowvram.checkpoints.safetensors_header import write_safetensors_header_only
    from lowvram.checkpoints.safetensors_header import read_safetensors_header

    n = max(1, int(gb * 2**30 // (WIDTH * WIDTH * 2)))
    write_safetensors_header_only(path, {f"layers.{i}.weight": ((WIDTH, WIDTH), "BF16") for i in range(n)})
    infos, _ = read_safetensors_header(path)
    g = torch.Generator().manual_seed(0)
    with open(path, "r+b") as f:
        for info in infos:
            f.seek(info.offset)
            f.write((torch.randn(WIDTH, WIDTH, generator=g) * 0.02).to(torch.bfloat16).view(torch.uint8).numpy().tobytes())
    return n


def load_child(path: str, mode: str, n: int) -> None:
    """Runs in a fresh process: load the checkpoint one way, print RSS growth as JSON."""
    from safetensors.torch import load_file

    from lowvram.runtime.loading import iter_safetensors, load_into
    from lowvram.runtime.precision import PrecisionConfig, quantize_weight

    with torch.device("meta"):
        module = torch.nn.ModuleDict({"layers": torch.nn.ModuleList(torch.nn.Linear(WIDTH, WIDTH, bias=False) for _ in range(n))})
    base = _rss_now()
    t0 = time.perf_counter()
    if mode == "fp8-direct":
        load_into(module, iter_safetensors([path]), torch.bfloat16, PrecisionConfig("fp8", torch.bfloat16))
    else:  # the usual way: the whole bf16 state dict in RAM, then converted
        sd = load_file(path)
        for k in list(sd):
            q, s = quantize_weight(sd.pop(k), "fp8")
            sd[k] = q
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"base_rss": base, "peak_rss": peak, "seconds": secs}))


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=3.0, help="checkpoint size in GB (bf16)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--json")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        load_child(a.child[0], a.child[1], int(a.child[2]))
        return
    ov = overhead(a.repeats)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "random.safetensors")
        n = write_checkpoint(path, a.gb)
        fp8_bytes = n * WIDTH * WIDTH
        loads = {}
        for mode in ("fp8-direct", "bf16-first"):
            r = subprocess.run([sys.executable, __file__, "--child", path, mode, str(n)], capture_output=True, text=True, check=True)
            loads[mode] = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"date {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores, torch {torch.__version__}")
    print("| runtime overhead (mid-size Flux config, CPU, 256²) | median s/forward | vs plain |")
    print("|---|---|---|")
    print(f"| plain | {ov['plain_s']:.4f} | — |")
    print(f"| lowvram, everything resident | {ov['resident_s']:.4f} | {ov['resident_overhead_pct']:+.1f} % |")
    print(f"| lowvram, every unit streamed (copies into the pool) | {ov['streamed_all_s']:.4f} | {ov['streamed_overhead_pct']:+.1f} % |")
    print()
    print(f"| load {n * WIDTH * WIDTH * 2 / 2**30:.1f} GiB bf16 checkpoint into fp8 ({fp8_bytes / 2**30:.2f} GiB) | peak RSS growth | vs fp8 size | s |")
    print("|---|---|---|---|")
    for mode, r in loads.items():
        grow = r["peak_rss"] - r["base_rss"]
        print(f"| {mode} | {grow / 2**30:.2f} GiB | {100 * (grow / fp8_bytes - 1):+.0f} % | {r['seconds']:.1f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"overhead": ov, "loads": loads, "fp8_bytes": fp8_bytes}, f, indent=2)


if __name__ == "__main__":
    main()
