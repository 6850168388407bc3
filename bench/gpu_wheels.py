"""Download into .whl/ exactly the wheels the GPU device lacks for bench/gpu_session.sh, and check the size.

The device (an H200 machine with no network) has torch and most of the scientific stack, but not
diffusers, mmgp or some of their dependencies; wheels carried in `.whl/` are installed there with
`pip install --no-index --no-deps --target`. pip cannot resolve for another machine's installed set
(`pip download` with dependencies would fetch torch and everything the device already has, gigabytes),
so the closure is walked here: each wanted wheel's Requires-Dist (markers evaluated for the device's
Python 3.12 on Linux), a dependency skipped when the device already has a version that satisfies it.

    python bench/gpu_wheels.py [--dest .whl] [--all-named]    # or: bash bench/gpu_wheels.sh
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import zipfile
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

# What the device's image holds: /work/.library/device/KINDS.md, "Python packages already there"
# (read on a machine running it on 2026-11-17) and its "pip list" row (2026-11) for the versions it gives.
# A name without a version is present at a version nobody recorded: taken as satisfying.
DEVICE_VERSIONS = {
    "accelerate": "1.15.0", "huggingface-hub": "1.33.0", "numpy": "2.5.2", "safetensors": "0.8.0",
    "tokenizers": "0.23.2", "torch": "2.11.0", "transformers": "5.17.0", "triton": "3.6.0",
}
DEVICE_PACKAGES = set(DEVICE_VERSIONS) | {canonicalize_name(n) for n in """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-ml-py onnx onnx-ir onnxruntime onnxscript opencv-python-headless
optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy
portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile
tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel
wrapt xarray xxhash yarl zipp""".split()}
# The libraries the session needs, each checked against the device (issue #13's list: the diffusers stack
# and mmgp). Versions: the ones this project's tests ran with (this machine's environment), mmgp's newest
# at the time of writing; a library the device already has at a satisfying version is not carried.
# comfy-aimdo: ComfyUI's allocator extension, which `comfy.model_management` imports (bench/comfy_peer.py;
# ComfyUI's own code is placed in .whl/comfyui by hand, docs/benchmarks.md); 0.6.0 is what the dry run used.
WANTED = ["diffusers", "transformers", "accelerate", "safetensors", "huggingface_hub", "tokenizers", "mmgp==3.8.2",
          "comfy-aimdo==0.6.0"]
# lowvram's own lower bounds (pyproject.toml) for what the device has: its versions must meet them.
LOWVRAM_NEEDS = ["transformers>=4.50", "accelerate>=1.0", "safetensors>=0.4", "huggingface_hub>=0.30", "torch>=2.4"]
# The device's interpreter, for environment markers (README: "python3 is Python 3.12.3").
DEVICE_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
              "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
# /work/.library/device/README.md's pip download command for that machine
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]
CARRY_LIMIT = 64 * 2**20  # the device tool's limit on the working tree that travels, wheels included


def device_satisfies(req: Requirement) -> bool:
    name = canonicalize_name(req.name)
    if name not in DEVICE_PACKAGES:
        return False
    v = DEVICE_VERSIONS.get(name)
    return v is None or req.specifier.contains(Version(v), prereleases=True)


def local_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def download(spec: str, dest: str) -> str:
    """One wheel, no dependencies, for the device's platform; returns its path."""
    before = set(glob.glob(os.path.join(dest, "*.whl")))
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)], "-d", dest, spec]
    subprocess.run(cmd, check=True)
    new = set(glob.glob(os.path.join(dest, "*.whl"))) - before
    if new:
        return new.pop()
    stem = re.sub(r"[-_.]+", "_", Requirement(spec).name).lower()  # already there from an earlier run
    return next(p for p in glob.glob(os.path.join(dest, "*.whl")) if os.path.basename(p).lower().startswith(stem + "-"))


def requires(wheel: str) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    reqs = [Requirement(line.split(":", 1)[1].strip()) for line in lines if line.startswith("Requires-Dist:")]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(DEVICE_ENV)]


def pin(req: Requirement) -> str:
    """The version to carry: this machine's (what the tests ran with) when it satisfies, else pip's choice."""
    v = local_version(req.name)
    if v and req.specifier.contains(Version(v), prereleases=True):
        return f"{req.name}=={v}"
    return f"{req.name}{req.specifier}"


def tree_bytes(root: str) -> int:
    """What travels besides the wheels: tracked files and untracked ones git does not ignore."""
    out = subprocess.run(["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         check=True, capture_output=True).stdout.decode().split("\0")
    return sum(os.path.getsize(os.path.join(root, p)) for p in out if p and os.path.isfile(os.path.join(root, p)))


def dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", default=".whl")
    ap.add_argument("--all-named", action="store_true",
                    help="carry every named library at this machine's version even where the device has one")
    args = ap.parse_args()
    os.makedirs(args.dest, exist_ok=True)
    # (requirement, named): a named library is skipped when the device's version meets what the session
    # needs of it (_floor); a dependency is only queued when the device's version does not satisfy it
    todo = [(Requirement(s if "==" in s else pin(Requirement(s))), True) for s in WANTED]
    carried: dict[str, str] = {}
    while todo:
        req, named = todo.pop(0)
        name = canonicalize_name(req.name)
        if name in carried:
            continue
        if named and not args.all_named and device_satisfies(_floor(req)):
            print(f"skip {req}: the device has {req.name} {DEVICE_VERSIONS.get(name, '(version not recorded)')}")
            continue
        wheel = download(str(req), args.dest)
        carried[name] = wheel
        print(f"carry {os.path.basename(wheel)} ({os.path.getsize(wheel) / 2**20:.1f} MiB)", flush=True)
        todo += [(Requirement(pin(dep)), False) for dep in requires(wheel)
                 if canonicalize_name(dep.name) not in carried and not device_satisfies(dep)]
    stray = set(glob.glob(os.path.join(args.dest, "*.whl"))) - set(carried.values())
    for p in sorted(stray):  # two versions of one package stop the device's install: keep only this run's
        print(f"remove {os.path.basename(p)} (not needed now)")
        os.remove(p)
    wheels = sum(os.path.getsize(p) for p in carried.values())
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], check=True, capture_output=True).stdout.decode().strip()
    tree = tree_bytes(root)
    placed = dir_bytes(os.path.join(args.dest, "comfyui"))  # travels with the wheels (bench/comfy_peer.py)
    print(f"{len(carried)} wheels, {wheels / 2**20:.1f} MiB; the working tree {tree / 2**20:.1f} MiB; "
          + (f"ComfyUI's code in {args.dest}/comfyui {placed / 2**20:.1f} MiB; " if placed else "")
          + f"together {(wheels + tree + placed) / 2**20:.1f} of the {CARRY_LIMIT / 2**20:.0f} MiB carry limit")
    if wheels + tree + placed > CARRY_LIMIT:
        big = sorted(carried.items(), key=lambda kv: -os.path.getsize(kv[1]))
        sys.exit("over the carry limit: drop the largest wheels the device has an older version of "
                 f"(largest: {', '.join(os.path.basename(p) for _, p in big[:3])}), or run without --all-named")


def _floor(req: Requirement) -> Requirement:
    """What the session needs of a named library: lowvram's own bound (LOWVRAM_NEEDS), else any version
    (the device lacks diffusers and mmgp, so they are carried whatever this says)."""
    for s in LOWVRAM_NEEDS:
        if canonicalize_name(Requirement(s).name) == canonicalize_name(req.name):
            return Requirement(s)
    return Requirement(req.name)


if __name__ == "__main__":
    main()
