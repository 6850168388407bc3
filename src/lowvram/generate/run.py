"""`lowvram generate`: a Session used for one request, then unloaded.

The CLI's one-shot run is the same path as the server's: Session.run (generate/session.py).
"""

from __future__ import annotations

from .request import GenerateRequest, GenerateResult  # noqa: F401  (the request types callers build)
from .session import Session


def generate(req: GenerateRequest, plan_fn, console=None) -> GenerateResult:
    """Run one generation and unload. `plan_fn(spec, workload, file_weights) -> Plan` comes from the front
    end (machine, policy); file_weights are the GGUF components of the inspected files."""
    session = Session(lambda spec, wl, fw=None, quality=None: plan_fn(spec, wl, fw), console=console)
    try:
        return session.run(req)
    finally:
        session.unload()
