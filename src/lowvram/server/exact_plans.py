"""The exact plans behind the readout's estimates, computed one at a time in the background.

When the page asks for a size never simulated, the readout answers at once from estimates
(plan/estimated.py) and hands the exact planning here; the fake-tensor simulations it runs land in the
cache, so the page's next readout of the same form is exact. One worker thread: the simulations hold the
server's plan lock anyway (ServerState.plan_lock), and a form changed ten times in a second must not queue
ten 30-second simulations in parallel — a key already queued or running is not queued again.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Hashable

log = logging.getLogger(__name__)

PENDING, DONE, FAILED = "pending", "done", "failed"


class ExactPlans:
    """Background exact planning, keyed by what is planned; `state(key)` says how it stands."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._states: dict[Hashable, str] = {}
        self._errors: dict[Hashable, str] = {}

    def request(self, key: Hashable, plan: Callable[[], object]) -> str:
        """Queue `plan()` under `key` unless it is queued, running or already finished; its state."""
        with self._lock:
            if key in self._states:
                return self._states[key]
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lowvram-exact-plan")
            self._states[key] = PENDING
            self._pool.submit(self._run, key, plan)
            return PENDING

    def state(self, key: Hashable) -> str | None:
        with self._lock:
            return self._states.get(key)

    def error(self, key: Hashable) -> str:
        with self._lock:
            return self._errors.get(key, "")

    def _run(self, key: Hashable, plan: Callable[[], object]) -> None:
        try:
            plan()
            outcome = DONE
        except Exception as e:  # reported through state(); the readout then stops waiting for it
            log.warning("exact plan for %s failed: %s", key, e)
            with self._lock:
                self._errors[key] = str(e)
            outcome = FAILED
        with self._lock:
            self._states[key] = outcome

    def close(self) -> None:
        """Drop what is queued; a simulation already running finishes (fake-tensor runs cannot be cut)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
