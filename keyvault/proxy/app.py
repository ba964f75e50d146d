"""The proxy as an ASGI app: one keyvault async client per route does the work.

A request from the app loses whatever credential it carried and the hop-by-hop headers;
the route's :class:`~keyvault.client.AsyncKeyvaultClient` adds the current key through the
same auth flow as the thin client (401 → refreshed primary → secondary), with its retries,
breaker and concurrency limit. The response streams back chunk by chunk as the upstream
sends it (server-sent events arrive event by event), raw, so compressed bodies pass
through untouched.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import httpx

from keyvault.client.auth import FINGERPRINT_EXTENSION
from keyvault.errors import CircuitOpenError, EnvironmentMismatch, KeyvaultError

log = logging.getLogger("keyvault.proxy")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: RFC 9110 §7.6.1, plus the framing headers the two sides each compute for themselves
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
#: whatever credential an app sends is never forwarded: the route adds the real key
CREDENTIALS = frozenset({b"authorization", b"x-api-key"})


@dataclass(frozen=True)
class Route:
    """One ``[proxy.<name>]`` as the app serves it."""

    name: str
    key: str
    client: httpx.AsyncClient
    header: str
    #: the value an app must present in ``header``, read when needed (None: no check)
    inbound_token: Callable[[], str] | None = None


class ProxyApp:
    """Dispatches each connection to its route by the port it arrived on."""

    def __init__(self, routes: Mapping[int, Route], admin: Callable[..., Awaitable[None]]):
        self.routes = dict(routes)
        self.admin = admin
        self.admin_port: int | None = None
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        port = (scope.get("server") or ("", 0))[1]
        route = self.routes.get(port)
        if route is None:
            await self.admin(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self._proxy(route, scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _proxy(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers = [(k, v) for k, v in scope["headers"]]
        if route.inbound_token is not None and not _presents(headers, route):
            await _error(send, 401, "authentication_error", "this proxy needs its inbound token")
            _access(route, scope, 401, None, started)
            return
        forwarded = [
            (k, v)
            for k, v in headers
            if k.lower() not in HOP_BY_HOP | CREDENTIALS | {route.header.lower().encode()}
        ]
        body = await _read_body(receive)
        query = scope.get("query_string") or b""
        target = scope["path"] + ("?" + query.decode() if query else "")
        request = route.client.build_request(
            scope["method"], target, headers=forwarded, content=body
        )
        try:
            response = await route.client.send(request, stream=True)
        except CircuitOpenError:
            await _error(send, 503, "overloaded_error", f"upstream of {route.name} is failing")
            _access(route, scope, 503, None, started)
            return
        except EnvironmentMismatch as exc:
            await _error(send, 403, "permission_error", str(exc))
            _access(route, scope, 403, None, started)
            return
        except (httpx.HTTPError, KeyvaultError) as exc:
            await _error(send, 502, "api_error", f"upstream unreachable ({type(exc).__name__})")
            _access(route, scope, 502, None, started)
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (k, v)
                        for k, v in response.headers.raw
                        if k.lower() not in HOP_BY_HOP - {b"content-length"}
                    ],
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()
        fingerprint = response.request.extensions.get(FINGERPRINT_EXTENSION)
        _access(route, scope, response.status_code, fingerprint, started)


def _presents(headers: list[tuple[bytes, bytes]], route: Route) -> bool:
    assert route.inbound_token is not None
    expected = route.inbound_token().encode()
    for name, value in headers:
        if name.lower() == b"authorization" and value.lower().startswith(b"bearer "):
            value = value[7:]
        elif name.lower() not in (b"x-api-key", route.header.lower().encode()):
            continue
        if hmac.compare_digest(value.strip(), expected):
            return True
    return False


async def _read_body(receive: Receive) -> bytes:
    """The request body, once: the auth flow replays it on a 401, so it is kept whole (one
    copy), not streamed twice."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def reply(send: Send, status: int, content_type: bytes, body: bytes) -> None:
    """A whole response the proxy itself makes (errors, the admin port)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _error(send: Send, status: int, kind: str, message: str) -> None:
    """An error in the shape the Claude API uses, so SDKs report it as they would."""
    body = json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()
    await reply(send, status, b"application/json", body)


def _access(
    route: Route, scope: Scope, status: int, fingerprint: str | None, started: float
) -> None:
    log.info(
        "%s %s %s -> %d (key %s %s, %.1f ms)",
        route.name,
        scope["method"],
        scope["path"],
        status,
        route.key,
        fingerprint or "-",
        (time.perf_counter() - started) * 1000,
    )
