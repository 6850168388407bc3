import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "fixtures"))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Each test session gets its own lowvram cache, so tests never read a stale user cache."""
    d = tmp_path_factory.getbasetemp() / "lowvram-cache"
    monkeypatch.setenv("LOWVRAM_CACHE_DIR", str(d))
