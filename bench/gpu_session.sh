#!/bin/bash
# Every GPU measurement the open issues ask for, in one call: device time is scarce (15 min a session),
# so the three benchmarks run back to back, each under its own time limit, each writing JSON and a log
# to $OUT as it goes. Run on the device machine from the repository root, with the wheels of what its
# image lacks (diffusers, gguf, importlib_metadata) in .whl/:
#     bash bench/gpu_session.sh            # CUDA machine
#     TINY=1 bash bench/gpu_session.sh     # dry run here, on CPU, with tiny configs
set -u
O=${OUT:-/tmp/lowvram-gpu-out}
mkdir -p "$O"
if [ -z "${TINY:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=$PWD/src:/tmp/site
  nvidia-smi --query-gpu=name,memory.total,driver_version,pcie.link.gen.max,pcie.link.width.max --format=csv | tee "$O/gpu.txt"
  T=""
else
  T="--tiny"
fi
export PYTHONUNBUFFERED=1
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
run() {  # name, limit in seconds, command...: the log goes to $OUT, the table (lines not starting with '{') here
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$O/$name.log" 2>&1
  echo "== $name: exit $? after $((SECONDS - t0)) s"
  grep -v "^{'\|Warning\|warn(\|There are modules\|^\[transformers\]\|Writing model shards" "$O/$name.log" | tail -25
}
run sim_vs_cuda 90 python3 bench/sim_vs_cuda.py $T --json "$O/sim_vs_cuda.json"
run gpu_offload 180 python3 bench/gpu_offload.py $T --steps 3 --json "$O/gpu_offload.json"
run gpu_generate 120 python3 bench/gpu_generate.py $T --budgets 0,6,4 --steps 20 --json "$O/gpu_generate.json"
# issue #13 items 1-2: all-resident vs unconstrained, wrap-around prefetch on/off, pinned vs staged pageable
run gpu_streaming 240 python3 bench/gpu_streaming.py $T --steps 10 --json "$O/gpu_streaming.json"
# item 3a (regional torch.compile, cold compile seconds in "first call s"): SDXL only, when asked
if [ -n "${COMPILE:-}" ]; then
  run gpu_compile 300 python3 bench/gpu_streaming.py $T --steps 10 --compile --models sdxl --json "$O/gpu_compile.json"
fi
