"""ASGI middleware that guards the local server: request size, who may call it, and what an internal error shows.

- `BodySizeLimit`: a body over the limit is answered 413, whether its length is declared or it arrives chunked;
- `LocalOrigin`: a request whose Host header is not one of the server's names (DNS rebinding), or whose Origin
  is another site, is refused with 403; no CORS header is ever sent, so other sites cannot read answers;
- `InternalErrors`: an unexpected exception becomes a 500 with a one-line JSON error and one line in the log
  (no traceback, no request content).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse

log = logging.getLogger("osteoscreen.web")


class BodySizeLimit:
    """A request body larger than `limit` bytes gets 413: at once from its Content-Length, else as soon as the
    bytes received exceed it (the application's own answer, whatever it made of the cut body, is dropped)."""

    class TooLarge(Exception):
        pass

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.limit:
            return await self._refuse(scope, receive, send)
        received, exceeded = 0, False

        async def counted():
            nonlocal received, exceeded
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                exceeded = True
                raise BodySizeLimit.TooLarge
            return message

        async def unless_exceeded(message):
            if not exceeded:
                await send(message)

        try:
            await self.app(scope, counted, unless_exceeded)
        except Exception:
            if not exceeded:
                raise
        if exceeded:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send):
        megabytes = self.limit / 2 ** 20
        response = JSONResponse({"error": f"upload larger than the {megabytes:g} MB limit"}, status_code=413,
                                headers={"Connection": "close"})
        await response(scope, receive, send)


def _host_name(value: str) -> str:
    """'Host' header or URL authority -> the lower-case host name without port ('[::1]:8000' -> '::1')."""
    try:
        return (urlsplit(f"//{value}").hostname or "").lower()
    except ValueError:
        return ""


class LocalOrigin:
    """Answer only requests addressed to one of `hosts` (host names without port; '*' allows any), and refuse
    cross-site requests: an Origin header whose host is not one of `hosts` gets 403."""

    def __init__(self, app, hosts: tuple[str, ...]):
        self.app, self.hosts = app, {host.lower().strip("[]") for host in hosts}

    def _allowed(self, name: str) -> bool:
        return "*" in self.hosts or name in self.hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        host = _host_name(headers.get(b"host", b"").decode("latin-1"))
        origin = headers.get(b"origin", b"").decode("latin-1")
        if not self._allowed(host):
            reason = "this server answers requests to its own address only (Host header refused)"
        elif origin and (origin == "null" or not self._allowed(_host_name(urlsplit(origin).netloc))):
            reason = "cross-site requests are refused (Origin header)"
        else:
            return await self.app(scope, receive, send)
        await JSONResponse({"error": reason}, status_code=403)(scope, receive, send)


class InternalErrors:
    """An exception no handler answered: 500 with a one-line JSON error, and one line in the log."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as error:
            log.error("internal error on %s %s: %s: %s", scope.get("method"), scope.get("path"),
                      type(error).__name__, str(error).splitlines()[0][:200] if str(error) else "")
            if not started:
                await JSONResponse({"error": "internal error (the server log has one line on it)"},
                                   status_code=500)(scope, receive, send)
