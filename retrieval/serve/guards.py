"""Request guards of the search service: Host check, body size cap, API key, loopback check."""

from __future__ import annotations

import ipaddress
import json
import secrets
from urllib.parse import unquote_to_bytes

from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from retrieval.errors import RetrievalError

API_KEY_HEADER = "x-api-key"
API_KEY_COOKIE = "clipline_api_key"
# Routes anyone may read: the page and its assets hold no data, the spec is not secret.
PUBLIC_PATHS = ("/", "/health", "/docs", "/redoc", "/openapi.json", "/favicon.ico")
PUBLIC_PREFIXES = ("/static/", "/docs/")


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'; any other name may resolve off the machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind_safety(host: str, api_key: str | None, insecure: bool) -> None:
    """Refuse to expose the index beyond this machine without an API key."""
    if is_loopback_host(host) or api_key or insecure:
        return
    raise RetrievalError(f"`host` {host} is reachable from other machines; pass `api_key` KEY "
                         "(or `insecure` to serve without one)")


async def _send_json(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    *headers],
    })
    await send({"type": "http.response.body", "body": body})


class BodyTooLargeError(Exception):
    """Raised from `receive` once a streamed body passes the limit; the app answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is over the limit of {limit} bytes")


class _HttpMiddleware:
    """ASGI middleware base: HTTP requests go to `http`; lifespan and websocket scopes pass straight through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await (self.http if scope["type"] == "http" else self.app)(scope, receive, send)


class BodySizeLimit(_HttpMiddleware):
    """ASGI middleware: 413 on a Content-Length over the limit, or once a chunked body passes it."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        super().__init__(app)
        self.max_body_bytes = max_body_bytes

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_body_bytes
            except ValueError:
                await _send_json(send, 400, "Content-Length is not a number")
                return
            if too_large:
                await _send_json(send, 413, f"request body is over the limit of {self.max_body_bytes} bytes")
                return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise BodyTooLargeError(self.max_body_bytes)
            return message

        await self.app(scope, limited_receive, send)


class ApiKeyGuard(_HttpMiddleware):
    """ASGI middleware: every non-public route needs the key (header, bearer token or cookie)."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        super().__init__(app)
        self.api_key = api_key.encode()

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or self._has_key(scope):
            await self.app(scope, receive, send)
            return
        await _send_json(send, 401, "missing or wrong API key; send it as the X-API-Key header",
                         [(b"www-authenticate", b'Bearer realm="clipline"')])

    def _has_key(self, scope: Scope) -> bool:
        offered: list[bytes] = []
        for name, value in scope.get("headers") or []:
            if name == API_KEY_HEADER.encode():
                offered.append(value.strip())
            elif name == b"authorization" and value[:7].lower() == b"bearer ":
                offered.append(value[7:].strip())
            elif name == b"cookie":
                for part in value.split(b";"):
                    cookie_name, _, cookie_value = part.strip().partition(b"=")
                    if cookie_name == API_KEY_COOKIE.encode():
                        offered.append(unquote_to_bytes(cookie_value))  # the page URI-encodes it
        # compare_digest: the time taken must not reveal how much of the key matched
        return any(secrets.compare_digest(candidate, self.api_key) for candidate in offered)


class SecurityHeaders(_HttpMiddleware):
    """ASGI middleware: tell browsers not to sniff types or leak the URL to other sites."""

    HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class TrustedHosts:
    """ASGI middleware: Starlette's TrustedHostMiddleware, its refusal answered as JSON `detail` like every 4xx.

    Starlette answers a wrong Host with a plain-text 400 before the app runs; the
    app itself never sends plain text, so that answer is recognised and rewritten.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: list[str]) -> None:
        self.check = TrustedHostMiddleware(app, allowed_hosts=allowed_hosts, www_redirect=False)
        self.allowed = ", ".join(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused = False

        async def send_json_refusal(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start" and message["status"] == 400 and \
                    dict(message.get("headers") or []).get(b"content-type", b"").startswith(b"text/plain"):
                refused = True
                await _send_json(send, 400, f"Host header not served here (allowed: {self.allowed}); open the "
                                            "server by one of those names, or add this one to its `allowed_hosts`")
            elif not refused:
                await send(message)

        await self.check(scope, receive, send_json_refusal)
