#!/bin/bash
# Every GPU measurement issue #13 asks for, in one call of the lent device (its time is scarce: 15 minutes a
# session, the machine's start included). Each part runs in its own process under its own time limit and
# writes its JSON to $OUT as it goes, so a part cut short or failing still leaves figures and the next part
# runs; the whole stays under LOWVRAM_BENCH_SECONDS (default 450 s: under the 8 minutes the issue allows).
#
#   here, first:   bash bench/gpu_wheels.sh                  # .whl/: diffusers, mmgp, ... (git-ignored)
#   on the device: bash bench/gpu_session.sh                 # run(command=..., carry=[".whl"], timeout_s=540)
#   dry run here:  bash bench/gpu_session.sh --dry-run       # or LOWVRAM_BENCH_TINY=1: CPU, tiny configs
#   then, here:    python bench/gpu_report.py DIR --docs docs/benchmarks.md   # DIR: the files that came back
#
# $OUT comes back as at most 8 files: env.json, sdxl.json, flux-dev.json, sd35-large.json, one JSON per
# extra part, session.log (every part's output) and benchmarks_gpu.md (bench/gpu_report.py's section).
# Extra parts: bench/gpu_streaming.py (another engineer's hook measurements) runs if it exists, called as
# `python3 bench/gpu_streaming.py --json FILE [--tiny]`; LOWVRAM_BENCH_EXTRA names others (space-separated).
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
export PYTHONUNBUFFERED=1 LOWVRAM_CACHE_DIR=${LOWVRAM_CACHE_DIR:-/tmp/lowvram-cache}
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
part sdxl 75 "$PY" bench/gpu_offload.py --model sdxl $T --json "$O/sdxl.json"
part flux-dev 180 "$PY" bench/gpu_offload.py --model flux-dev $T --json "$O/flux-dev.json"
part sd35-large 110 "$PY" bench/gpu_offload.py --model sd35-large $T --json "$O/sd35-large.json"
for extra in gpu_streaming ${LOWVRAM_BENCH_EXTRA:-}; do
  [ -f "bench/$extra.py" ] && part "$extra" 60 "$PY" "bench/$extra.py" $T --json "$O/$extra.json"
done

rm -f "$O"/*.tmp  # a part killed mid-write leaves its previous complete file and this
"$PY" bench/gpu_report.py "$O" --out "$O/benchmarks_gpu.md" > /dev/null 2>> "$LOG" || echo "report failed (see $LOG)"
echo "== done after ${SECONDS} s; files in $O:"; ls "$O"
grep -v '^{' "$LOG" | grep '^==\|Error\|error' | tail -20
cat "$O/benchmarks_gpu.md" 2>/dev/null
