#!/bin/bash
# The wheels bench/gpu_session.sh needs on the GPU device (no network there), into .whl/ (git-ignored),
# with the total checked against the device tool's 64 MiB carry limit. Run here, in the repository root,
# before the device run; then call the device with carry [".whl"]. See bench/gpu_wheels.py.
set -eu
cd "$(git rev-parse --show-toplevel)"
grep -qx '.whl/' .gitignore || { echo ".whl/ must be in .gitignore: wheels are never committed" >&2; exit 1; }
exec "${PYTHON:-python3}" bench/gpu_wheels.py --dest .whl "$@"
