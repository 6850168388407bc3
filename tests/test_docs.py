"""README.md's GPU guide is the output of `lowvram gpus --tiers --markdown`, not a copy that drifts.
If this fails: python -m lowvram.docs gpu-guide"""

import os
import subprocess
import sys

from lowvram.docs import README, guide_in, with_guide

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def test_readme_gpu_guide_equals_the_command():
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "lowvram.cli", "gpus", "--tiers", "--ram", "32GB", "--markdown"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(README, encoding="utf-8") as f:
        assert guide_in(f.read()) == r.stdout, "stale README GPU guide: run python -m lowvram.docs gpu-guide"


def test_regeneration_replaces_only_the_table():
    text = "intro\n<!-- gpu-guide:begin -->\n| old |\n<!-- gpu-guide:end -->\nrest\n"
    new = with_guide(text, "| new |\n")
    assert new == "intro\n<!-- gpu-guide:begin -->\n| new |\n<!-- gpu-guide:end -->\nrest\n"
    assert guide_in(new) == "| new |\n"
