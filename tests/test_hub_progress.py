"""hub_progress.Meter on huggingface_hub's real snapshot_download (in this process, from a local fake hub):
the bars it is handed add up to the files' bytes and count, and cancelling stops the download at its next
chunk with nothing half-written in the cache's final place (blobs, snapshot)."""

import hashlib
import os
import threading
import time

import pytest
from fake_hub import FakeHub
from huggingface_hub import snapshot_download

from lowvram.hub_progress import Meter, PullCancelled

REPO = "someone/files"
SIZES = {"a.bin": 300_000, "sub/b.bin": 200_000, "config.json": 100}
SLOW_BYTES_PER_S = 200_000  # a.bin takes 1.5 s: time to cancel it mid-way
READ_CHUNK = 16 * 1024  # instead of huggingface_hub's 10 MiB, so a small file reports progress (and can be cancelled) mid-way
WAIT_S = 60


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", READ_CHUNK)
    root = tmp_path / "repo"
    for name, size in SIZES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(os.urandom(size))
    with FakeHub({REPO: str(root)}) as h:
        yield h


def _download(h, cache, meter):
    return snapshot_download(REPO, endpoint=h.url, cache_dir=str(cache), tqdm_class=meter.bar_class(), max_workers=2)


def test_meter_counts_every_byte_and_file(hub, tmp_path):
    meter = Meter()
    folder = _download(hub, tmp_path / "cache", meter)
    assert meter.bytes_done == meter.bytes_received == sum(SIZES.values())
    assert meter.files_done == len(SIZES)
    assert all(os.path.getsize(os.path.join(folder, n)) == s for n, s in SIZES.items())


def test_cancel_stops_at_the_next_chunk_and_leaves_nothing_half_written(hub, tmp_path):
    hub.bytes_per_second = SLOW_BYTES_PER_S
    meter, raised = Meter(), []

    def run():
        try:
            _download(hub, tmp_path / "cache", meter)
        except PullCancelled as e:
            raised.append(e)

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + WAIT_S
    while meter.bytes_done == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    meter.cancel()
    t.join(WAIT_S)
    assert not t.is_alive() and raised, "the download did not stop"
    assert 0 < meter.bytes_done < sum(SIZES.values())
    snapshots = {f for d, _, fs in os.walk(tmp_path / "cache") if "snapshots" in d for f in fs}
    assert "a.bin" not in snapshots  # cancelled mid-way: not in the snapshot
    blobs = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "cache") if d.endswith("blobs") for f in fs]
    for b in blobs:  # a finished blob is named by its ETag, the fake hub's sha1 of the content
        if not b.endswith(".incomplete"):
            assert hashlib.sha1(open(b, "rb").read()).hexdigest() == os.path.basename(b)
