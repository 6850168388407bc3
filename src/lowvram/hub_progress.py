"""A pull's progress as numbers, through huggingface_hub's own hook: snapshot_download's `tqdm_class`.

snapshot_download (huggingface_hub 2.4, the version this was written against and tested with; older
ones gave the class only their files bar, so bytes stay 0 there) makes three bars from the class it is given: the files
("Fetching N files", one update per finished file), the bytes written ("Reconstructing...", fed with
every chunk by the download threads, and rolled back when a broken download restarts from zero: the
progress) and the bytes received ("Downloading bytes": what came over the network: the speed).
A `Meter` adds them up for a server to report, and cancels a download by raising from `update`
(called every huggingface_hub DOWNLOAD_CHUNK_SIZE, 10 MiB): huggingface_hub deletes the file it was
writing (a temporary `.incomplete` file, never the blob or the snapshot), keeps the files it finished,
and the next pull fetches only the rest. Hand-written because tqdm has no "report to a callback" class and polling the
cache's folder could not tell a half-written blob from a finished one.
"""

from __future__ import annotations

import threading

# The description snapshot_download gives its received-bytes bar (huggingface_hub/_snapshot_download.py).
TRANSFER_DESC = "Downloading bytes"
FILES_DESC = "Fetching"  # its files bar: "Fetching N files"


class PullCancelled(Exception):
    """Raised inside huggingface_hub's download threads to stop a cancelled pull at its next chunk."""


class Meter:
    """Bytes and files a pull has fetched so far (summed over its snapshot downloads); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bytes_done = 0  # written to disk: progress
        self.bytes_received = 0  # over the network by this pull: speed
        self.files_done = 0
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def count(self, kind: str, n: float) -> None:
        if self.cancelled:
            raise PullCancelled("the pull was cancelled")
        with self._lock:
            if kind == "bytes":
                self.bytes_done += int(n)
            elif kind == "received":
                self.bytes_received += int(n)
            elif kind == "files":
                self.files_done += int(n)

    def bar_class(self) -> type:
        """A tqdm stand-in for snapshot_download(tqdm_class=...) that reports to this meter."""
        meter = self

        class MeterBar(_Bar):
            pass

        MeterBar.meter = meter
        return MeterBar


class _Bar:
    """What snapshot_download and its per-file `_AggregatedTqdm` call on a bar, nothing drawn."""

    meter: Meter

    def __init__(self, iterable=None, *args, desc: str | None = None, total=None, initial=0, unit: str = "it",
                 **kwargs) -> None:
        self.desc, self.total, self.n, self.unit = desc or "", total, initial or 0, unit
        if self.desc.startswith(FILES_DESC):
            self.kind = "files"
        elif unit == "B":
            self.kind = "received" if self.desc.startswith(TRANSFER_DESC) else "bytes"
        else:
            self.kind = "other"
        if initial:
            self.meter.count(self.kind, initial)

    def update(self, n=1) -> None:
        n = n or 0
        self.n += n
        self.meter.count(self.kind, n)

    @property
    def format_dict(self) -> dict:
        return {"n": self.n, "total": self.total, "rate": None}

    def refresh(self, *a, **k) -> None:
        pass

    def close(self) -> None:
        pass

    def set_description(self, desc=None, refresh=True) -> None:
        pass

    set_description_str = set_description

    def set_postfix_str(self, s="", refresh=True) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None
