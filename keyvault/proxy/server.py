"""Serving the proxy: sockets bound (loopback unless an inbound token is configured), one
uvicorn server for every route and the admin port, a clean drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from keyvault.config import ProxyConfig
from keyvault.errors import ConfigError
from keyvault.extras import missing_extra
from keyvault.proxy.app import ProxyApp, Receive, Route, Scope, Send, reply
from keyvault.registry import KeyVault

log = logging.getLogger("keyvault.proxy")

DEFAULT_ADMIN = "127.0.0.1:9465"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: how long SIGTERM waits for requests in flight (a streamed answer can take a while)
DRAIN_SECONDS = 60


@dataclass(frozen=True)
class Listener:
    name: str
    host: str
    port: int


def parse_listen(text: str, what: str) -> Listener:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what}: {text!r} is not HOST:PORT")
    return Listener(what, host.strip("[]"), int(port))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(listener: Listener) -> socket.socket:
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio turns Nagle off only on sockets that say they are TCP,
    # and with Nagle on, a response's last small write waits out the client's delayed ACK
    # (~40 ms per request on a kept-alive connection)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((listener.host, listener.port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"{listener.name}: cannot listen on {listener.host}:{listener.port}: {exc.strerror}"
        ) from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def build_route(kv: KeyVault, name: str, settings: ProxyConfig) -> Route:
    inbound = settings.inbound_token
    return Route(
        name=name,
        key=settings.key,
        client=kv.async_client(
            settings.key, base_url=settings.upstream, header=settings.header, timeout=None
        ),
        header=settings.header,
        inbound_token=None
        if inbound is None
        else (lambda: kv.keyset(inbound).primary.secret.reveal()),
    )


class Admin:
    """``/healthz`` and ``/metrics``, on a port of their own so no upstream path collides."""

    def __init__(self, app: ProxyApp, names: Sequence[str]) -> None:
        self.app = app
        self.names = list(names)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/healthz":
            body = json.dumps(
                {"status": "ok", "routes": self.names, "in_flight": self.app.in_flight}
            ).encode()
            await reply(send, 200, b"application/json", body)
        elif scope["path"] == "/metrics":
            try:
                import prometheus_client
            except ImportError:
                await reply(send, 404, b"text/plain", b"prometheus-client is not installed\n")
                return
            await reply(
                send,
                200,
                prometheus_client.CONTENT_TYPE_LATEST.encode(),
                prometheus_client.generate_latest(),
            )
        else:
            await reply(send, 404, b"text/plain", b"not found\n")


def serve(kv: KeyVault, names: Sequence[str] = (), *, admin: str = DEFAULT_ADMIN) -> int:
    """Serve the named routes (every ``[proxy.*]`` by default) until SIGTERM/SIGINT; in-flight
    requests are drained first. Returns the exit code (0)."""
    try:
        import uvicorn
    except ImportError:
        raise missing_extra("keyvault proxy", "proxy") from None
    configured = kv.config.proxy
    chosen = list(names) or sorted(configured)
    if not chosen:
        raise ConfigError(f"{kv.config.label}: no [proxy.NAME] table to serve")
    unknown = [name for name in chosen if name not in configured]
    if unknown:
        raise ConfigError(
            f"{kv.config.label}: no [proxy.{unknown[0]}] (configured: "
            f"{', '.join(sorted(configured)) or 'none'})"
        )
    listeners: dict[str, Listener] = {}
    for name in chosen:
        settings = configured[name]
        listener = parse_listen(settings.listen, f"[proxy.{name}] listen")
        if not is_loopback(listener.host) and settings.inbound_token is None:
            raise ConfigError(
                f"[proxy.{name}] listens on {listener.host}, beyond this machine, without an "
                "inbound_token: anyone who reaches the port would spend the key. Listen on "
                "127.0.0.1, or set inbound_token to a keyvault key the app must present"
            )
        listeners[name] = listener
    routes = {name: build_route(kv, name, configured[name]) for name in chosen}
    for route in routes.values():
        kv.cache(route.key).get()  # a missing key or the guard: fail before listening
    sockets = {name: bind(listener) for name, listener in listeners.items()}
    admin_socket = bind(parse_listen(admin, "--admin"))
    app = ProxyApp({sockets[n].getsockname()[1]: routes[n] for n in chosen}, admin=_noop)
    app.admin = Admin(app, chosen)
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=DRAIN_SECONDS,
    )
    server = _draining_server_class()(config)
    for name, sock in sockets.items():
        host, port = sock.getsockname()[:2]
        settings = configured[name]
        log.info(
            "proxy %s: http://%s:%d -> %s (key %s)",
            name,
            host,
            port,
            settings.upstream,
            settings.key,
        )
    host, port = admin_socket.getsockname()[:2]
    log.info("proxy admin: http://%s:%d/healthz and /metrics", host, port)

    async def run() -> None:
        try:
            await server.serve(sockets=[*sockets.values(), admin_socket])
        finally:
            for route in routes.values():
                await route.client.aclose()

    asyncio.run(run())
    log.info("proxy stopped")
    return 0


async def _noop(*_: Any) -> None:
    return None


def _draining_server_class() -> type:
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn's server, minus re-raising SIGTERM after the drain: a proxy that stopped
        cleanly exits 0, as a service manager expects."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield  # signals reach the main thread only (an embedding app's thread)
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return DrainingServer
