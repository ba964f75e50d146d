"""A loopback HTTP server that behaves like a vendor API whose keys keyvault rotates.

It knows which keys are valid (401 for any other), can be scripted to answer 429 with
``Retry-After``, 503 or 500, or to hang, counts requests and the most it ever had in flight,
and speaks enough of three APIs for the tests: a plain ``GET /v1/models`` and
``POST /v1/messages`` (the Claude API's shape), an issuing admin API (``POST /admin/keys``,
``DELETE /admin/keys/{id}``), and the Claude Admin API's key listing and deactivation
(``GET /v1/organizations/api_keys``, ``POST /v1/organizations/api_keys/{id}``).

It stores fingerprints of what it saw, never raw keys, so no assertion can print one.
"""

from __future__ import annotations

import collections
import json
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from keyvault.secret import fingerprint


class VendorState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.keys: dict[str, dict[str, Any]] = {}  # id -> {"value", "status", "created_at"}
        self.admin_keys: set[str] = set()
        self.script: collections.deque[tuple[int, dict[str, str]]] = collections.deque()
        self.hang: float = 0.0
        self.delay: float = 0.0
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.seen: list[str] = []  # fingerprints of the keys presented, in order
        self.statuses: collections.Counter[int] = collections.Counter()
        self.webhooks: list[dict[str, Any]] = []
        self.webhook_deliveries: list[tuple[dict[str, str], bytes]] = []  # headers, raw body
        self.paths: list[str] = []  # raw request paths, as sent
        self.idempotent: dict[str, tuple[str, str]] = {}  # Idempotency-Key -> (id, value)
        self.stream_gap = 0.1  # seconds between the events of a streamed answer
        self.answer_text = "ok"  # what POST /v1/messages answers (a canary, for cache tests)
        self.stream_done = threading.Event()

    def add_key(self, value: str, *, key_id: str | None = None) -> str:
        with self.lock:
            key_id = key_id or "key_" + secrets.token_hex(6)
            self.keys[key_id] = {"value": value, "status": "active", "created_at": time.time()}
            return key_id

    def revoke(self, value: str) -> None:
        with self.lock:
            for entry in self.keys.values():
                if entry["value"] == value:
                    entry["status"] = "inactive"

    def is_valid(self, value: str | None) -> bool:
        with self.lock:
            return any(e["value"] == value and e["status"] == "active" for e in self.keys.values())

    def status_of(self, value: str) -> str | None:
        with self.lock:
            for entry in self.keys.values():
                if entry["value"] == value:
                    return str(entry["status"])
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # headers and body go out as two writes: without this, Nagle and delayed ACKs
        # cost every keep-alive request 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _key(self) -> str | None:
        raw = self.headers.get("x-api-key")
        if raw:
            return raw
        auth = self.headers.get("authorization", "")
        return auth[7:] if auth.lower().startswith("bearer ") else None

    def _reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if status == 204 else json.dumps(body if body is not None else {}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.server.state.statuses[status] += 1

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("content-length") or 0)
        self.raw_body = self.rfile.read(length) if length else b""
        if not length:
            return {}
        try:
            loaded = json.loads(self.raw_body)
            return loaded if isinstance(loaded, dict) else {}
        except ValueError:
            return {}

    def _handle(self, method: str) -> None:
        state = self.server.state
        body = self._body() if method in ("POST", "PUT") else {}
        with state.lock:
            state.requests += 1
            state.paths.append(self.path)
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            scripted = state.script.popleft() if state.script else None
            hang, delay = state.hang, state.delay
        try:
            key = self._key()
            with state.lock:
                state.seen.append(fingerprint(key) if key else "none")
            if hang:
                time.sleep(hang)
            if delay:
                time.sleep(delay)
            if scripted is not None:
                status, headers = scripted
                self._reply(status, {"type": "error", "error": {"type": "scripted"}}, headers)
                return
            self._route(method, urlsplit(self.path).path, key, body)
        finally:
            with state.lock:
                state.in_flight -= 1

    def _route(self, method: str, path: str, key: str | None, body: dict[str, Any]) -> None:
        state = self.server.state
        if path == "/hooks" and method == "POST":
            with state.lock:
                state.webhooks.append(body)
                state.webhook_deliveries.append((dict(self.headers), self.raw_body))
            self._reply(204)
            return
        if path.startswith("/v1/organizations/api_keys"):
            if key not in state.admin_keys:
                self._reply(401, {"type": "error", "error": {"type": "authentication_error"}})
                return
            if method == "GET":
                with state.lock:
                    data = [
                        {
                            "id": key_id,
                            "type": "api_key",
                            "partial_key_hint": e["value"][:7] + "..." + e["value"][-4:],
                            "status": e["status"],
                            "created_at": time.strftime(
                                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(e["created_at"])
                            ),
                        }
                        for key_id, e in state.keys.items()
                    ]
                self._reply(
                    200, {"data": data, "has_more": False, "first_id": None, "last_id": None}
                )
                return
            key_id = path.rsplit("/", 1)[-1]
            with state.lock:
                entry = state.keys.get(key_id)
                if entry is not None and body.get("status") in ("active", "inactive"):
                    entry["status"] = body["status"]
            if entry is None:
                self._reply(404, {"type": "error", "error": {"type": "not_found_error"}})
            else:
                self._reply(200, {"id": key_id, "status": entry["status"]})
            return
        if path.startswith("/admin/keys"):
            if key not in state.admin_keys:
                self._reply(401, {"error": "admin key required"})
                return
            if method == "POST":
                # honours Idempotency-Key: the same key asks again, the same key comes back
                token = self.headers.get("idempotency-key")
                with state.lock:
                    known = state.idempotent.get(token) if token else None
                if known is None:
                    value = "vk-" + secrets.token_urlsafe(24)
                    known = (state.add_key(value), value)
                    if token:
                        with state.lock:
                            state.idempotent[token] = known
                self._reply(201, {"data": {"id": known[0], "secret": known[1]}})
                return
            if method == "DELETE":
                key_id = path.rsplit("/", 1)[-1]
                with state.lock:
                    entry = state.keys.get(key_id)
                    if entry is not None:
                        entry["status"] = "inactive"
                self._reply(204 if entry else 404)
                return
        if not state.is_valid(key):
            self._reply(401, {"type": "error", "error": {"type": "authentication_error"}})
            return
        if path == "/v1/models":
            self._reply(200, {"data": [{"id": "claude-test", "type": "model"}]})
        elif path == "/v1/messages" and method == "POST" and body.get("stream"):
            self._stream(body)
        elif path == "/v1/messages" and method == "POST":
            self._reply(
                200,
                {
                    "id": f"msg_{state.requests}",  # which upstream call answered
                    "type": "message",
                    "role": "assistant",
                    "model": body.get("model", "claude-test"),
                    "content": [{"type": "text", "text": state.answer_text}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": 1, "output_tokens": 1},
                },
            )
        else:
            self._reply(200 if method != "POST" else 201, {"ok": True, "path": path})

    def _stream(self, body: dict[str, Any]) -> None:
        """A Messages stream (server-sent events), ``state.stream_gap`` seconds apart; the
        time each event was written is kept, and ``stream_done`` is set after the last."""
        state = self.server.state
        words = ["one", "two", "three", "four", "five"]
        message = {
            "id": "msg_stream",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude-test"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 0},
        }
        block = {"type": "text", "text": ""}
        stop = {"stop_reason": "end_turn", "stop_sequence": None}
        events: list[dict[str, Any]] = [
            {"type": "message_start", "message": message},
            {"type": "content_block_start", "index": 0, "content_block": block},
            *[
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": word},
                }
                for word in words
            ],
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": stop, "usage": {"output_tokens": len(words)}},
            {"type": "message_stop"},
        ]
        state.stream_done.clear()
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        for event in events:
            self.wfile.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()
            time.sleep(state.stream_gap)
        state.stream_done.set()
        self.close_connection = True
        self.server.state.statuses[200] += 1

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: VendorState


class VendorAPI:
    def __init__(self) -> None:
        self.state = VendorState()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = self.state
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def issuer_toml(
        self, *keys: str, verify: bool = True, revoke: bool = True, admin_key: str = "vendor/admin"
    ) -> str:
        """``[issuers.vendor]``: this API as an http issuer (create, and optionally verify
        and revoke), and ``[keys."K"] issuer = "vendor"`` for each key named."""
        lines = [
            "[issuers.vendor]",
            'type = "http"',
            f'create = {{ url = "{self.url}/admin/keys", method = "POST" }}',
        ]
        if verify:
            lines.append(f'verify = {{ url = "{self.url}/v1/models" }}')
        if revoke:
            lines.append(f'revoke = {{ url = "{self.url}/admin/keys/{{id}}", method = "DELETE" }}')
        lines += [
            'key_path = "data.secret"',
            'id_path = "data.id"',
            f'admin_key = "{admin_key}"',
            'key_header = "x-api-key"',
        ]
        for key in keys:
            lines += ["", f'[keys."{key}"]', 'issuer = "vendor"']
        return "\n" + "\n".join(lines) + "\n"

    def start(self) -> VendorAPI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def main() -> None:
    """The vendor in a process of its own, for benchmarks whose client must not share a GIL
    with the server: valid keys come on stdin, one a line, until a blank line; it prints its
    URL and serves until stdin closes."""
    import sys

    vendor = VendorAPI().start()
    for line in sys.stdin:
        if not line.strip():
            break
        vendor.state.add_key(line.strip())
    print(vendor.url, flush=True)
    sys.stdin.read()  # until the parent closes it
    vendor.stop()


if __name__ == "__main__":
    main()
