"""Turn a GPU session's JSON ($OUT of bench/gpu_session.sh) into the docs/benchmarks.md section.

Reads env.json and each model's rows (bench/gpu_offload.py), plus any extra part's {"rows": [...]}, and
writes markdown: the header (date, card, driver, versions, link), lowvram vs unconstrained / the physical
limit / its plan, the peers at the same budget, and issue #13's targets each marked met or not. Prints it,
writes it to --out, and with --docs replaces (or inserts) the marked section of docs/benchmarks.md.

    python bench/gpu_report.py OUT_DIR [--out OUT_DIR/benchmarks_gpu.md] [--docs docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import glob
import json
import os

MODELS = ["sdxl", "flux-dev", "sd35-large"]  # bench/gpu_offload.py's cases, in the session's order
BEGIN, END = "<!-- gpu-session:begin -->", "<!-- gpu-session:end -->"
# issue #13's targets ("Done means")
ALL_RESIDENT_MAX = 1.03  # all-resident step / unconstrained step
STREAMING_MAX = 1.15  # streamed step / physical limit (SDXL 4 GiB, Flux 8 and 12 GiB)
PREDICTION_MAX_ERROR = 0.10  # |predicted - measured| / measured on rows not used for fitting


def _f(x, fmt="{:.3f}", none="-"):
    return none if x is None else fmt.format(x)


def _load(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def header(env: dict, runs: dict) -> list[str]:
    bw = next((r["bandwidth"] for r in runs.values() if r.get("bandwidth") == r.get("bandwidth") and r.get("bandwidth")), None)
    libs = ", ".join(f"{k} {env[k]}" for k in ("torch", "diffusers", "transformers", "accelerate", "mmgp") if env.get(k))
    return [f"{env.get('date', '?')}; {env.get('card', '?')} ({env.get('card_memory', '?')}, driver {env.get('driver', '?')}, "
            f"PCIe {env.get('pcie', '?')}, CUDA {env.get('torch_cuda', '?')}); {libs}; commit {env.get('commit', '?')}; "
            f"pinned host->device {bw / 1e9:.1f} GB/s" if bw else f"{env.get('date', '?')}; {env.get('card', '?')}; {libs} "
            "(no GPU: a dry run on tiny configs, the figures mean nothing)", ""]


def lowvram_table(runs: dict) -> list[str]:
    out = ["| model | budget | plan | s/step | unconstrained | vs unconstrained | physical limit | vs limit | "
           "predicted s/step ((pred - meas) / meas) | peak VRAM meas / pred GiB | peak RAM GiB | identical |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, run in runs.items():
        base = {r["batch"]: r for r in run["rows"] if r["mode"] == "unconstrained"}
        for r in run["rows"]:
            if r["mode"] != "lowvram":
                continue
            u = base.get(r.get("batch"))
            plan = "all resident" if r.get("placement") == "resident" else \
                f"{r.get('placement')} {r.get('resident_units')}/{r.get('total_units')} resident" + \
                (" (spread)" if r.get("spread") else "") + \
                (f", {r['stream_buffers']} buffers" if r.get("stream_buffers", 2) != 2 else "") + \
                f", {_f(r.get('streamed_GiB'), '{:.2f}')} GiB/step"
            if r.get("s_per_step") is None:
                out.append(f"| {model} | {r['budget_GiB'] or 'whole card'} | {plan} | {r.get('note', 'not measured')} "
                           "| | | | | | | | |")
                continue
            err = r.get("predicted_error_pct")
            out.append(
                f"| {model} | {str(r['budget_GiB']) + ' GiB' if r['budget_GiB'] else 'whole card'} | {plan} | "
                f"{_f(r['s_per_step'])} | {_f(u and u['s_per_step'])} | {_f(r.get('vs_unconstrained'), '{:.2f}x')} | "
                f"{_f(r.get('physical_limit_s'))} | {_f(r.get('ratio_to_limit'), '{:.2f}x')} | "
                f"{_f(r.get('predicted_s_per_step'))} ({_f(err, '{:+.0f} %')}) | "
                f"{_f(r.get('peak_vram_GiB'), '{:.2f}')} / {_f(r.get('predicted_peak_vram_GiB'), '{:.2f}')} | "
                f"{_f(r.get('peak_ram_GiB'), '{:.1f}')} | {'yes' if r.get('bit_identical') else 'no (max diff ' + _f(r.get('max_abs_diff'), '{:.3g}') + ')'} |")
    return out


def peers_table(runs: dict) -> list[str]:
    out = ["| model | budget GiB | mode | s/step | vs lowvram | vs limit | peak VRAM GiB | peak RAM GiB | setup s | identical |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for model, run in runs.items():
        peers = [r for r in run["rows"] if r["mode"] not in ("unconstrained", "lowvram")]
        if not peers:
            continue
        budget = peers[0]["budget_GiB"]
        mine = next((r for r in run["rows"] if r["mode"] == "lowvram" and r["budget_GiB"] == budget), None)
        for r in ([mine] if mine else []) + peers:
            s = r.get("s_per_step")
            if s is None:
                out.append(f"| {model} | {budget} | {r['mode']} | {r.get('note', 'not measured')} | | | | | | |")
                continue
            vs = s / mine["s_per_step"] if mine and mine.get("s_per_step") else None
            out.append(f"| {model} | {budget} | {r['mode']} | {_f(s)} | {_f(vs, '{:.2f}x')} | {_f(r.get('ratio_to_limit'), '{:.2f}x')} | "
                       f"{_f(r.get('peak_vram_GiB'), '{:.2f}')} | {_f(r.get('peak_ram_GiB'), '{:.1f}')} | {_f(r.get('setup_s'), '{:.1f}')} | "
                       f"{'yes' if r.get('bit_identical') else 'no'} |")
    return out


def peer_details(runs: dict) -> list[str]:
    """What a peer reported of itself beyond the table (ComfyUI: what its partial load kept resident)."""
    out = []
    for model, run in runs.items():
        for r in run["rows"]:
            if "comfy_loaded_GiB" not in r:
                continue
            out.append(f"- {model}, {r['mode']}: {r['comfy_loaded_GiB']:.2f} GiB of weights resident, "
                       f"{r.get('comfy_cast_layers')} of {r.get('comfy_layers')} layers cast per call "
                       f"({_f(r.get('castable_pct'), '{:.1f}')} % of the weights in comfy.ops layers), "
                       f"{_f(r.get('residue_MiB'), '{:.1f}')} MiB of other tensors put on the device by the bench; "
                       f"import {_f(r.get('prepare_s'), '{:.1f}')} s (not in setup)")
    return out


def targets(runs: dict) -> list[str]:
    """Issue #13's "Done means", each line met / not met / not measured, from these rows."""
    lines = []

    def mark(ok):
        return "not measured" if ok is None else ("met" if ok else "NOT met")

    for model, run in runs.items():
        for r in run["rows"]:
            if r["mode"] != "lowvram" or r.get("s_per_step") is None:
                continue
            if r["budget_GiB"] is None and r.get("vs_unconstrained"):
                lines.append(f"- {model} all-resident {r['vs_unconstrained']:.2f}x unconstrained (target <= {ALL_RESIDENT_MAX}): "
                             f"{mark(r['vs_unconstrained'] <= ALL_RESIDENT_MAX)}")
            elif r.get("ratio_to_limit"):
                lines.append(f"- {model} at {r['budget_GiB']} GiB {r['ratio_to_limit']:.2f}x the physical limit (target <= "
                             f"{STREAMING_MAX}): {mark(r['ratio_to_limit'] <= STREAMING_MAX)}; bit-identical: "
                             f"{mark(r.get('bit_identical'))}")
            err = r.get("predicted_error_pct")
            if err is not None:
                lines.append(f"- {model} {r['budget_GiB'] or 'whole card'}: predicted s/step {err:+.0f} % off "
                             f"(target within {PREDICTION_MAX_ERROR:.0%}): {mark(abs(err) <= 100 * PREDICTION_MAX_ERROR)}")
        peers = [r for r in run["rows"] if r["mode"] not in ("unconstrained", "lowvram") and r.get("s_per_step")]
        mine = next((r for r in run["rows"] if peers and r["mode"] == "lowvram" and r["budget_GiB"] == peers[0]["budget_GiB"]), None)
        if peers and mine and mine.get("s_per_step"):
            best = min(peers, key=lambda r: r["s_per_step"])
            lines.append(f"- {model} at {mine['budget_GiB']} GiB: lowvram {mine['s_per_step']:.3f} s/step, fastest peer that "
                         f"fits {best['mode']} {best['s_per_step']:.3f}: {mark(mine['s_per_step'] < best['s_per_step'])}")
    return lines


def extra_tables(out_dir: str) -> list[str]:
    """Any other part's JSON with a "rows" list (e.g. bench/gpu_streaming.py), as a plain table."""
    out = []
    known = {"env.json"} | {f"{m}.json" for m in MODELS}
    for path in sorted(glob.glob(os.path.join(out_dir, "*.json"))):
        if os.path.basename(path) in known:
            continue
        data = _load(path)
        rows = data.get("rows") if isinstance(data, dict) else None
        if not rows or not isinstance(rows, list) or not isinstance(rows[0], dict):
            continue
        keys = list(dict.fromkeys(k for r in rows for k in r))
        out += ["", f"{os.path.basename(path)}:", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for r in rows:
            out.append("| " + " | ".join(_f(r.get(k), "{:.4g}") if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys) + " |")
    return out


def render(out_dir: str) -> str:
    env = _load(os.path.join(out_dir, "env.json")) or {}
    runs = {m: d for m in MODELS if (d := _load(os.path.join(out_dir, f"{m}.json"))) and d.get("rows")}
    lines = [BEGIN, f"## Streaming, peers and predictions (`bash bench/gpu_session.sh`, {env.get('card', '?')}, "
             f"{env.get('date', '?')[:10]})", ""]
    lines += header(env, runs)
    lines += ["Real-size denoisers with random weights built on the GPU, 1024², median s/step after a warm-up step; "
              "budgets enforced with `torch.cuda.set_per_process_memory_fraction`; lowvram runs the plan "
              "`make_plan` makes for this card at that budget (lossless) with the measured link. Physical limit = "
              "max(the unconstrained step, bytes the plan must stream / measured pinned bandwidth). Peak VRAM = "
              "`torch.cuda.max_memory_allocated`; predicted = the denoiser's weights on the device + activations "
              "(the plan's reserve apart). Peak RAM = the process's peak RSS during the row (weights included).", ""]
    lines += lowvram_table(runs) + ["", "Peers at the same budget, same module, same process (bench/peers.py):", ""]
    dry = any(run.get("tiny") for run in runs.values())
    lines += peers_table(runs)
    details = peer_details(runs)
    lines += ["", "ComfyUI's partial load (bench/comfy_peer.py):", ""] + details if details else []
    lines += ["", "Issue #13's targets:", ""]
    lines += ["- not judged: a dry run (tiny configs on a CPU) checks that every part runs, not speed"] if dry else \
        (targets(runs) or ["- no rows measured"])
    lines += extra_tables(out_dir)
    missing = [m for m in MODELS if m not in runs]
    if missing:
        lines += ["", f"Not measured in this run (time box or failure; see session.log): {', '.join(missing)}."]
    return "\n".join(lines + ["", END]) + "\n"


def into_docs(doc_path: str, section: str) -> None:
    """Replace the marked section, or put it after the document's opening paragraph."""
    with open(doc_path) as f:
        text = f.read()
    if BEGIN in text and END in text:
        a, b = text.index(BEGIN), text.index(END) + len(END) + 1
        text = text[:a] + section + text[b:]
    else:
        cut = text.index("\n## ")
        text = text[:cut + 1] + section + "\n" + text[cut + 1:]
    tmp = doc_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, doc_path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--out", help="write the markdown here too")
    ap.add_argument("--docs", help="replace the marked section of this markdown file (docs/benchmarks.md)")
    args = ap.parse_args()
    section = render(args.out_dir)
    print(section)
    if args.out:
        with open(args.out, "w") as f:
            f.write(section)
    if args.docs:
        into_docs(args.docs, section)


if __name__ == "__main__":
    main()
