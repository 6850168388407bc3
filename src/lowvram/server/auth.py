"""HTTP basic auth on every route (`--api-auth USER:PASS[,USER2:PASS2]`, A1111's flag and format)."""

from __future__ import annotations

import base64
import binascii
import json
import secrets

from ..errors import UserError


def parse_credentials(text: str) -> list[tuple[str, str]]:
    """`USER:PASS` pairs separated by commas, as A1111's --api-auth takes them."""
    pairs = []
    for item in text.split(","):
        user, sep, password = item.strip().partition(":")
        if not sep or not user or not password:
            raise UserError("--api-auth takes USER:PASS (several separated by commas), each with a user and a password.")
        pairs.append((user, password))
    return pairs


class BasicAuth:
    """ASGI middleware: 401 with a WWW-Authenticate challenge unless the request carries a listed user."""

    def __init__(self, app, credentials: list[tuple[str, str]]) -> None:
        self.app = app
        self.credentials = [(u.encode(), p.encode()) for u, p in credentials]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": "Unauthorized", "detail": "This server needs a user and password (HTTP basic auth)."}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b'Basic realm="lowvram"')]})
        await send({"type": "http.response.body", "body": body})

    def _allowed(self, scope) -> bool:
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, value = header.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            user, sep, password = base64.b64decode(value.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        ok = False
        for u, p in self.credentials:  # compare against all, in constant time per pair
            ok |= secrets.compare_digest(user, u) & secrets.compare_digest(password, p)
        return bool(sep) and ok
