"""Joining a Ray cluster (or starting a local one) for the length of a command.

Ray's own defaults are kept (resources detected, the cluster found from RAY_ADDRESS or the one
`ray start` made on this machine); only Ray's start-up logging is held to warnings.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from ..errors import UserError

INSTALL_HINT = 'pip install "lowvram[ray]"'


def import_ray():
    """Ray, or one sentence saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}.") from None
    return ray


@dataclass
class Cluster:
    address: str | None  # None: a local cluster started for this command
    gpus: int  # GPUs the cluster declares: one worker or replica each

    def workers(self) -> tuple[int, float]:
        """(how many workers, GPUs each): one per GPU; one on the CPU for a cluster without GPUs."""
        return (self.gpus, 1.0) if self.gpus >= 1 else (1, 0.0)


@contextlib.contextmanager
def connect(address: str | None, console=None):
    """A Cluster for the duration of the block; a cluster this process already joined is reused (and
    left running), one joined here is left (a local one stopped) at the end."""
    ray = import_ray()
    owned = not ray.is_initialized()
    if owned:
        try:
            # Joining an existing cluster takes no start-up options (Ray refuses them); a local one
            # starts without the dashboard, which lowvram does not use.
            local = {} if address else {"include_dashboard": False}
            ray.init(address=address, logging_level=logging.WARNING, configure_logging=True, **local)
        except (ConnectionError, ValueError, RuntimeError) as e:
            where = address or "a local cluster"
            raise UserError(f"Cannot join the Ray cluster at {where} ({str(e).strip().splitlines()[0][:200]}): "
                            "check the address (ray://HOST:10001 or HOST:6379) and that `ray start` runs there.") from None
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        cluster = Cluster(address, gpus)
        if console is not None and gpus == 0:
            console.print("note: the Ray cluster has no GPUs: one worker runs on the CPU.", markup=False, highlight=False)
        yield cluster
    finally:
        if owned:
            ray.shutdown()

