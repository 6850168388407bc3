"""How lowvram's hub layer talks HTTP: a checked HF_ENDPOINT and a timeout on every request.

huggingface_hub reads HF_ENDPOINT as is (a typo becomes a traceback deep in its URL handling) and
sends some requests — the `repo_info` call that starts every snapshot download — with no timeout at
all, so a server that accepts the connection and never answers hangs `lowvram pull` silently. Here the
endpoint is checked (scheme http/https and a host) and huggingface_hub's own HTTP client is given
connect/read/write/pool timeouts; its own download and metadata timeouts are set through the
environment variables it documents when the user has not set them.
"""

from __future__ import annotations

import os
from functools import lru_cache
from urllib.parse import urlsplit

from .errors import UserError

# Seconds a hub request may wait to connect, or between two received bytes: huggingface_hub's own
# default for its metadata (HF_HUB_ETAG_TIMEOUT) and download (HF_HUB_DOWNLOAD_TIMEOUT) requests.
HUB_TIMEOUT_S = 10
TIMEOUT_ENV = ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT")


def check_endpoint(value: str | None) -> None:
    """UserError unless `value` (HF_ENDPOINT) is unset or an http(s) URL with a host."""
    if value is None:
        return
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 — raises ValueError for a port that is not a number in range
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"HF_ENDPOINT={value!r} is not a hub address: set it to an http:// or https:// URL with a host "
                        "(e.g. https://huggingface.co), or unset it.")


def configure_hub() -> None:
    """Check HF_ENDPOINT and install the timeouts; call before each use of the hub (cheap after the first)."""
    check_endpoint(os.environ.get("HF_ENDPOINT"))
    _install_timeouts()


@lru_cache(maxsize=None)
def _install_timeouts() -> None:
    """Once per process: installing a client factory closes huggingface_hub's shared session, so doing it
    on every call would drop its open connections between a pull's preview and its download."""
    for name in TIMEOUT_ENV:  # read by huggingface_hub when first imported; the user's value wins
        os.environ.setdefault(name, str(HUB_TIMEOUT_S))
    import huggingface_hub

    try:
        from huggingface_hub.utils._http import default_client_factory
    except ImportError:  # a huggingface_hub without a pluggable httpx client: only its own timeouts apply
        return

    def client_with_timeouts():
        client = default_client_factory()
        client.timeout = type(client.timeout)(HUB_TIMEOUT_S)
        hooks = client.event_hooks
        hooks["request"] = [*hooks.get("request", []), _bound_timeouts]
        client.event_hooks = hooks
        return client

    huggingface_hub.set_client_factory(client_with_timeouts)


def _bound_timeouts(request) -> None:
    """Request hook: huggingface_hub passes `timeout=None` (wait forever) explicitly on some calls, which
    overrides the client's default; httpx carries the per-request timeouts in `request.extensions`, so
    the unset ones are filled in there. Hand-written because no setting of either library does it."""
    timeout = dict(request.extensions.get("timeout") or {})
    for key in ("connect", "read", "write", "pool"):
        if timeout.get(key) is None:
            timeout[key] = HUB_TIMEOUT_S
    request.extensions["timeout"] = timeout
