#!/bin/bash
# Every GPU measurement issue #13 asks for, in one call of the lent device (its time is scarce: 15 minutes a
# session, the machine's start included). Each part runs in its own process under its own time limit and
# writes its JSON to $OUT as it goes, so a part cut short or failing still leaves figures and the next part
# runs; the whole stays under LOWVRAM_BENCH_SECONDS (default 450 s: under the 8 minutes the issue allows).
#
#   here, first:   bash bench/gpu_wheels.sh                  # .whl/: diffusers, mmgp, ... (git-ignored)
#                  and ComfyUI's Python files in .whl/comfyui (by hand: docs/benchmarks.md; else its row is a note)
#   on the device: bash bench/gpu_session.sh                 # run(command=..., carry=[".whl"], timeout_s=540)
#   dry run here:  bash bench/gpu_session.sh --dry-run       # or LOWVRAM_BENCH_TINY=1: CPU, tiny configs
#   a subset:      LOWVRAM_BENCH_MODELS="flux-dev" bash bench/gpu_session.sh
#   then, here:    python bench/gpu_report.py DIR --docs docs/benchmarks.md   # DIR: the files that came back
#
# $OUT comes back as at most 8 files: env.json, sdxl.json, flux-dev.json, sd35-large.json, one JSON per
# extra part, session.log (every part's output) and benchmarks_gpu.md (bench/gpu_report.py's section).
# Extra parts: bench/gpu_streaming.py (another engineer's hook measurements) runs if it exists, with
# `--json FILE` and (dry run) `--tiny` where its --help lists them; LOWVRAM_BENCH_EXTRA names others,
# space-separated (e.g. "sim_vs_cuda": the earlier session's script, 60 s at most) — one more at most with
# gpu_streaming present, or a file would not come back.
set -u
cd "$(dirname "$0")/.."
O=${OUT:-/tmp/lowvram-gpu-out}
mkdir -p "$O"
TINY=${LOWVRAM_BENCH_TINY:-}
[ "${1:-}" = "--dry-run" ] && TINY=1
PY=${PYTHON:-python3}
TOTAL=${LOWVRAM_BENCH_SECONDS:-$([ -n "$TINY" ] && echo 1500 || echo 450)}
SCALE=$([ -n "$TINY" ] && echo 4 || echo 1)  # the dry run's CPU (2 shared cores) is slower than the device
REPORT_S=15  # kept back for the report at the end
LOG="$O/session.log"
export PYTHONUNBUFFERED=1 LOWVRAM_CACHE_DIR=${LOWVRAM_CACHE_DIR:-/tmp/lowvram-cache} LOWVRAM_BENCH_TINY=$TINY
if [ -z "$TINY" ]; then
  if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || { echo "installing .whl/ failed" | tee -a "$LOG"; exit 1; }
    export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-}
  else
    export PYTHONPATH=$PWD/src:${PYTHONPATH:-}
  fi
  T=""
else
  export PYTHONPATH=$PWD/src:${PYTHONPATH:-}
  T="--tiny --steps 1 --cap-s 1 --peer-cap-s 1"
fi
"$PY" bench/gpu_env.py > "$O/env.json" 2>> "$LOG"
cat "$O/env.json"

part() {  # name, seconds, command...: runs it under min(seconds, what is left), output appended to the log
  local name=$1 want=$(($2 * SCALE)); shift 2
  local left=$((TOTAL - REPORT_S - SECONDS))
  local limit=$(( want < left ? want : left ))
  if [ "$limit" -lt 20 ]; then
    echo "== $name: skipped, ${left} s left of ${TOTAL}" | tee -a "$LOG"
    return
  fi
  local t0=$SECONDS
  echo "== $name (limit ${limit} s, at ${SECONDS} s)" >> "$LOG"
  timeout -k 10 "$limit" "$@" >> "$LOG" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s$([ $rc = 124 ] && echo ' (time limit: rows so far are kept)')" | tee -a "$LOG"
}

# (a) all-resident vs unconstrained, (b) budgets vs the physical limit, (c) peers, (d) plan vs measured
# seconds each model's part may take on the device (estimates for an H200, the pinning of 16-24 GB of
# host memory being most of Flux's and SD3.5-Large's: see docs/benchmarks.md, "Next GPU session"). ComfyUI's
# row adds ~10 / 30 / 25 s (it page-locks what it offloads, in place: ~2.3 / 16 / 10 GiB); with gpu_streaming's
# 60 s the caps had 10 s to spare, given to SDXL (75 -> 85): Flux and SD3.5 keep theirs, and ComfyUI runs before
# model / sequential offload and mmgp, so a part that meets its cap loses those rows rather than ComfyUI's
declare -A LIMIT=([sdxl]=85 [flux-dev]=180 [sd35-large]=110)
for m in ${LOWVRAM_BENCH_MODELS:-sdxl flux-dev sd35-large}; do
  part "$m" "${LIMIT[$m]:-120}" "$PY" bench/gpu_offload.py --model "$m" $T --json "$O/$m.json"
done
# Extra parts: their flags are not ours to fix, so --json / --tiny are passed only where the script's
# --help names them; OUT and LOWVRAM_BENCH_TINY are in the environment either way, and the output is logged.
for extra in gpu_streaming ${LOWVRAM_BENCH_EXTRA:-}; do
  [ -f "bench/$extra.py" ] || continue
  [ $((TOTAL - REPORT_S - SECONDS)) -ge 30 ] || { echo "== $extra: skipped, too little time left" | tee -a "$LOG"; continue; }
  help=$(timeout 60 "$PY" "bench/$extra.py" --help 2>/dev/null)
  flags=()
  grep -q -- '--json' <<< "$help" && flags+=(--json "$O/$extra.json")
  [ -n "$TINY" ] && grep -q -- '--tiny' <<< "$help" && flags+=(--tiny)
  part "$extra" 60 "$PY" "bench/$extra.py" "${flags[@]}"
done

rm -f "$O"/*.tmp  # a part killed mid-write leaves its previous complete file and this
"$PY" bench/gpu_report.py "$O" --out "$O/benchmarks_gpu.md" > /dev/null 2>> "$LOG" || echo "report failed (see $LOG)"
echo "== done after ${SECONDS} s; files in $O:"; ls "$O"
grep -v '^{' "$LOG" | grep '^==\|Error\|error' | tail -20
cat "$O/benchmarks_gpu.md" 2>/dev/null
