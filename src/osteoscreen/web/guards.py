"""ASGI middleware that guards the local server: request size, who may call it, and what an internal error shows.

- `BodySizeLimit`: a body over the limit is answered 413, whether its length is declared or it arrives chunked;
  a body that stalls for STALL_S seconds is answered 408;
- `LocalOrigin`: a request whose Host header is not one of the server's names (DNS rebinding), or whose Origin
  is another site, is refused with 403; no CORS header is ever sent, so other sites cannot read answers;
- `InternalErrors`: an unexpected exception becomes a 500 with a one-line JSON error and one line in the log
  (no traceback, no request content).
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse

log = logging.getLogger("osteoscreen.web")
#: Seconds a request body may go without sending a byte before the server answers 408 and closes it.
STALL_S = 30.0


class BodySizeLimit:
    """A request body larger than `limit` bytes gets 413: at once from its Content-Length, else as soon as the
    bytes received exceed it (the application's own answer, whatever it made of the cut body, is dropped). A body
    that stalls (no bytes for `stall_s` seconds before it is complete) gets 408 and its connection is closed, so
    slow or stuck clients cannot hold the server's connections."""

    class TooLarge(Exception):
        pass

    class Stalled(Exception):
        pass

    def __init__(self, app, limit: int, stall_s: float = STALL_S):
        self.app, self.limit, self.stall_s = app, limit, stall_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.limit:
            return await self._refuse(scope, receive, send)
        received, exceeded, stalled, complete = 0, False, False, False

        async def counted():
            nonlocal received, exceeded, stalled, complete
            if complete:  # the body is in: what follows (a disconnect) may take as long as it takes
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.stall_s)
            except TimeoutError:
                stalled = True
                raise BodySizeLimit.Stalled from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            received += len(message.get("body", b""))
            if received > self.limit:
                exceeded = True
                raise BodySizeLimit.TooLarge
            return message

        async def unless_refused(message):
            if not (exceeded or stalled):
                await send(message)

        try:
            await self.app(scope, counted, unless_refused)
        except Exception:
            if not (exceeded or stalled):
                raise
        if exceeded:
            await self._refuse(scope, receive, send)
        elif stalled:
            log.warning("%s %s: the request body stalled for %g s; answered 408", scope.get("method"),
                        scope.get("path"), self.stall_s)
            await JSONResponse({"error": f"the upload stalled (no data for {self.stall_s:g} s)"}, status_code=408,
                               headers={"Connection": "close"})(scope, receive, send)

    async def _refuse(self, scope, receive, send):
        megabytes = self.limit / 2 ** 20
        response = JSONResponse({"error": f"upload larger than the {megabytes:g} MB limit"}, status_code=413,
                                headers={"Connection": "close"})
        await response(scope, receive, send)


def _host_name(value: str) -> str:
    """'Host' header or URL authority -> the lower-case host name without port ('[::1]:8000' -> '::1')."""
    return _authority(value, None)[0]


def _authority(value: str, default_port: int | None) -> tuple[str, int | None]:
    """'Host' header or URL authority -> (lower-case host name, port or default_port); ('', None) if malformed."""
    try:
        parts = urlsplit(f"//{value}")
        return (parts.hostname or "").lower(), parts.port or default_port
    except ValueError:
        return "", None


class LocalOrigin:
    """Answer only requests addressed to one of `hosts` (host names without port; '*' allows any), and refuse
    cross-site requests: an Origin header whose host is not one of `hosts`, or whose port is not the one the request
    was sent to (another local web application), gets 403."""

    def __init__(self, app, hosts: tuple[str, ...]):
        self.app, self.hosts = app, {host.lower().strip("[]") for host in hosts}

    def _allowed(self, name: str) -> bool:
        return "*" in self.hosts or name in self.hosts

    def _same_server(self, origin: str, port: int | None) -> bool:
        """The Origin names one of our hosts and the port the request came to (scheme default if none given)."""
        parts = urlsplit(origin)
        name, origin_port = _authority(parts.netloc, 443 if parts.scheme == "https" else 80)
        return self._allowed(name) and origin_port == port

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        default_port = 443 if scope.get("scheme") == "https" else 80
        host, port = _authority(headers.get(b"host", b"").decode("latin-1"), default_port)
        origin = headers.get(b"origin", b"").decode("latin-1")
        if not self._allowed(host):
            reason = "this server answers requests to its own address only (Host header refused)"
        elif origin and (origin == "null" or not self._same_server(origin, port)):
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
