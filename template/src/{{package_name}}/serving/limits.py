"""Refuse oversized request bodies before reading them whole: a 20 MB JSON batch parsed first would cost hundreds
of MB of memory before the batch size check could refuse it, and a few such requests OOM-kill a container.

An ASGI middleware, so it sees the body as it arrives: a Content-Length over the limit is refused at once, without
reading a byte; a chunked body is counted as it streams and refused as soon as it passes the limit.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

BYTES_PER_NUMBER = 32  # a float in JSON with its separator, generously ("-1.2345678901234567e-05, ")
OVERHEAD = 64 * 1024


def default_max_body_bytes(max_batch_size: int, n_features: int) -> int:
    """The largest body a valid request can need: MAX_BATCH_SIZE rows of n_features numbers, plus the envelope."""
    return max_batch_size * n_features * BYTES_PER_NUMBER + OVERHEAD


class BodyLimit:
    """Answer 413 with one line when a request body is over limit() bytes."""

    def __init__(self, app: ASGIApp, limit: Callable[[], int]):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > limit:
                await self.refuse(send, int(declared), limit)
                return
            if b"transfer-encoding" not in headers:  # the server reads Content-Length bytes, no more: nothing to count
                await self.app(scope, receive, send)
                return
        received = 0
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # answer now; the app sees a client that went away
                    refused = True
                    await self.refuse(send, received, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:  # after the 413, nothing the app says reaches the client
                await send(message)

        await self.app(scope, counting_receive, guarded_send)

    @staticmethod
    async def refuse(send: Send, size: int, limit: int) -> None:
        body = json.dumps({"detail": f"request body of {size}+ bytes is over MAX_BODY_BYTES={limit}; "
                                     "send smaller batches"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
