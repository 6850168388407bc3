"""CPU benchmark of loading a bf16 checkpoint into each planned precision: lowvram's direct loader
(runtime/loading.py) against the usual way (safetensors' load_file of the whole file, then convert).

    python bench/load_speed.py [--gb 1] [--repeats 3] [--threads 0] [--json out.json]

Each load runs in a fresh process; the rounds interleave the methods so the machine's noise (it is shared)
hits them alike, and the table shows medians. Columns: wall seconds, CPU seconds (all threads), MB/s of the
file, peak RSS growth (VmHWM, reset just before the load) against the loaded size, and the direct loader's
throughput as a fraction of the usual way's for the same precision (issue #13 item 6: target >= 80 %, peak
RSS <= the loaded size + 10 %). The file is written first, so it is in the page cache: this measures the
conversion, not the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from cpu_overhead import WIDTH, write_checkpoint  # the same random bf16 stack of 4096x4096 layers as the overhead bench

TARGETS = ("fp8", "int8", "bf16", "fp16", "fp32")
BYTES = {"fp8": 1, "int8": 1, "bf16": 2, "fp16": 2, "fp32": 4}


def _hwm() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def load_child(path: str, method: str, target: str, n: int, threads: int) -> None:
    """Runs in a fresh process: load the checkpoint one way into `target`, print timings and RSS as JSON."""
    from safetensors.torch import load_file

    from lowvram.runtime.loading import iter_safetensors, load_into
    from lowvram.runtime.precision import COMPUTE_DTYPES, PrecisionConfig, quantize_weight

    if threads:
        torch.set_num_threads(threads)
    eight_bit = target in ("fp8", "int8")
    dtype = torch.bfloat16 if eight_bit else COMPUTE_DTYPES[target]
    with torch.device("meta"):
        module = torch.nn.ModuleDict({"layers": torch.nn.ModuleList(torch.nn.Linear(WIDTH, WIDTH, bias=False) for _ in range(n))})
    with open("/proc/self/clear_refs", "w") as f:  # peak RSS := current RSS (Linux >= 4.0)
        f.write("5")
    base = _hwm()
    t0, c0 = time.perf_counter(), time.process_time()
    if method == "direct":
        load_into(module, iter_safetensors([path]), dtype, PrecisionConfig(target, dtype) if eight_bit else None)
    else:  # the usual way: the whole bf16 state dict in RAM, then converted tensor by tensor
        sd = load_file(path)
        for k in list(sd):
            w = sd.pop(k)
            # copy=True: load_file's tensors map the file; a model's parameters are its own memory
            sd[k] = quantize_weight(w, target)[0] if eight_bit else w.to(dtype, copy=True)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"seconds": secs, "cpu_seconds": cpu, "rss_growth": _hwm() - base}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=1.0, help="checkpoint size in GiB (bf16)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the table shows medians")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the loading processes (0: torch's default)")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--json")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        load_child(a.child[0], a.child[1], a.child[2], int(a.child[3]), int(a.child[4]))
        return
    targets = a.targets.split(",")
    runs: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "random.safetensors")
        n = write_checkpoint(path, a.gb)
        file_bytes = n * WIDTH * WIDTH * 2
        for _ in range(a.repeats):
            for target in targets:
                for method in ("file-first", "direct"):
                    r = subprocess.run([sys.executable, __file__, "--child", path, method, target, str(n), str(a.threads)],
                                       capture_output=True, text=True, check=True, timeout=1800)
                    runs.setdefault((method, target), []).append(json.loads(r.stdout.strip().splitlines()[-1]))
    rows = []
    for (method, target), rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        size = n * WIDTH * WIDTH * BYTES[target]
        rows.append({"method": method, "target": target, **med, "mb_per_s": file_bytes / med["seconds"] / 1e6,
                     "loaded_bytes": size, "rss_vs_size_pct": 100 * (med["rss_growth"] / size - 1), "runs": rs})
    by = {(r["method"], r["target"]): r for r in rows}
    print(f"date {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"threads {a.threads or torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}, "
          f"{file_bytes / 2**30:.2f} GiB bf16 file, medians of {a.repeats}")
    print("| into | method | wall s | CPU s | MB/s (wall) | peak RSS growth | vs loaded size | direct / file-first throughput (wall, CPU) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = ""
        if r["method"] == "direct":
            ff = by[("file-first", r["target"])]
            ratio = f"{ff['seconds'] / r['seconds']:.2f}, {ff['cpu_seconds'] / r['cpu_seconds']:.2f}"
        print(f"| {r['target']} | {r['method']} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {r['mb_per_s']:.0f} | "
              f"{r['rss_growth'] / 2**30:.2f} GiB | {r['rss_vs_size_pct']:+.0f} % | {ratio} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"file_bytes": file_bytes, "threads": a.threads, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
