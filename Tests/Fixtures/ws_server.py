#!/usr/bin/env python3
"""WebSocket test peer for the Swift integration tests (websockets' asyncio server).

Run with the repository's venv (scripts/setup.sh creates it):

    .venv/bin/python Tests/Fixtures/ws_server.py [--port 0] [--tls-cert C --tls-key K [--tls-client-ca CA]
                                                                      [--tls-max-version 1.2]]
                                                 [--subprotocols a,b] [--deflate] [--watch-stdin]
                                                 [--deflate-server-max-window-bits N] [--deflate-client-max-window-bits N]
                                                 [--deflate-server-no-context-takeover]
                                                 [--deflate-client-no-context-takeover]

The first line on stdout is ``PORT <n>`` (flushed) once the server listens on 127.0.0.1; logs go to stderr.
Later stdout lines are events a test asked for (``report-stall`` below).

Behaviour is chosen by the request path (query parameters in brackets):

    /echo                        echo every text and binary message (the default for any unknown path)
    /headers                     send one text message: a JSON object {lower-cased header name: value} of the
                                 request headers (repeated headers joined with ", "), then echo
    /subprotocol                 pick the first of --subprotocols that the client offered (none: no subprotocol),
                                 send its name as a text message ("" when none), then echo
    /close?code=4001&reason=bye  close right after the handshake with that code and reason
    /reject?status=403[&retry-after=2]
                                 refuse the upgrade: HTTP <status> with body "forbidden by test" (and that
                                 Retry-After header)
    /ping                        send a ping with payload "hello"; when its pong arrives send text "pong-received";
                                 echo meanwhile and afterwards
    /slow-handshake?delay=5      wait <delay> seconds (float) before answering the upgrade, then echo
    /send-then-close?count=N&size=S[&report-stall=T]
                                 send N binary messages of S bytes (byte i of each message is i % 256), then
                                 close with 1000; with report-stall, print one line on stdout: ``STALLED i`` once
                                 sending message i (from 0) has waited T seconds (float) for the client to read,
                                 or ``SENT N`` when every message went out without such a wait
    /fragmented?count=N&size=S   send one text message as N frames of S bytes ("x"), then echo
    /broadcast                   every message from any /broadcast client goes to all /broadcast clients
                                 (the sender included)

Defaults: max message size 64 MiB, no keepalive pings, no compression (--deflate offers permessage-deflate).
--deflate alone accepts permessage-deflate with websockets' defaults (server_max_window_bits=12,
client_max_window_bits=12, memLevel 5). Any --deflate-* option implies --deflate and configures the server side
of the negotiation instead (RFC 7692 section 7.1; unset options leave the client's offer as it is):
--deflate-server-max-window-bits N caps the server's window at N (9-15; websockets refuses 8),
--deflate-client-max-window-bits N caps the client's window at N when the client offers client_max_window_bits,
--deflate-server-no-context-takeover / --deflate-client-no-context-takeover force those parameters.
With --watch-stdin the server exits when its stdin reaches EOF (the launching test process died or closed it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import ssl
import sys
import threading
from urllib.parse import parse_qs, urlsplit

# websockets refuses messages of more than 4096 fragments unless told otherwise (Autobahn 9.3/9.4 send 65536)
os.environ.setdefault("WEBSOCKETS_MAX_FRAGMENTS", str(1 << 20))

from websockets.asyncio.server import ServerConnection, serve  # noqa: E402
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.http11 import Request, Response

MAX_SIZE = 64 * 1024 * 1024

BROADCAST_CLIENTS: set[ServerConnection] = set()


def log(*parts: object) -> None:
    print("ws_server:", *parts, file=sys.stderr, flush=True)


def split_path(path: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(path)
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    return parts.path or "/", query


def request_path(connection: ServerConnection) -> tuple[str, dict[str, str]]:
    assert connection.request is not None
    return split_path(connection.request.path)


def int_param(query: dict[str, str], name: str, default: int) -> int:
    try:
        return int(query.get(name, default))
    except ValueError:
        return default


async def echo(connection: ServerConnection) -> None:
    async for message in connection:
        await connection.send(message)


async def handler(connection: ServerConnection) -> None:
    path, query = request_path(connection)
    log(f"open {path} from {connection.remote_address}")
    try:
        if path == "/headers":
            headers: dict[str, str] = {}
            assert connection.request is not None
            for name, value in connection.request.headers.raw_items():
                key = name.lower()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            await connection.send(json.dumps(headers))
            await echo(connection)
        elif path == "/subprotocol":
            await connection.send(connection.subprotocol or "")
            await echo(connection)
        elif path == "/close":
            code = int_param(query, "code", 1000)
            await connection.close(code, query.get("reason", ""))
        elif path == "/ping":
            pong = await connection.ping(b"hello")

            async def report_pong() -> None:
                await pong
                await connection.send("pong-received")

            task = asyncio.create_task(report_pong())
            try:
                await echo(connection)
            finally:
                task.cancel()
        elif path == "/send-then-close":
            count = int_param(query, "count", 1)
            size = int_param(query, "size", 16)
            pattern = bytes(range(256)) * (size // 256 + 1)
            payload = pattern[:size]
            stall = float(query.get("report-stall", "0") or "0")
            stalled = False
            for index in range(count):
                if stall > 0 and not stalled:
                    send = asyncio.ensure_future(connection.send(payload))
                    done, _ = await asyncio.wait({send}, timeout=stall)
                    if not done:
                        stalled = True
                        print(f"STALLED {index}", flush=True)
                    await send
                else:
                    await connection.send(payload)
            if stall > 0 and not stalled:
                print(f"SENT {count}", flush=True)
            await connection.close(1000)
        elif path == "/fragmented":
            count = int_param(query, "count", 3)
            size = int_param(query, "size", 10)
            # An iterable makes websockets send one text message as `count` frames of `size` bytes each.
            await connection.send(["x" * size for _ in range(count)])
            await echo(connection)
        elif path == "/broadcast":
            BROADCAST_CLIENTS.add(connection)
            try:
                async for message in connection:
                    targets = list(BROADCAST_CLIENTS)
                    await asyncio.gather(*(send_quietly(c, message) for c in targets))
            finally:
                BROADCAST_CLIENTS.discard(connection)
        else:  # /echo and anything else
            await echo(connection)
    except ConnectionClosed:
        pass
    finally:
        log(f"closed {path}: code={connection.close_code} reason={connection.close_reason!r}")


async def send_quietly(connection: ServerConnection, message: str | bytes) -> None:
    try:
        await connection.send(message)
    except ConnectionClosed:
        pass


async def process_request(connection: ServerConnection, request: Request) -> Response | None:
    path, query = split_path(request.path)
    if path == "/reject":
        status = int_param(query, "status", 403)
        log(f"rejecting {request.path} with {status}")
        response = connection.respond(status, "forbidden by test")
        if "retry-after" in query:
            response.headers["Retry-After"] = query["retry-after"]
        return response
    if path == "/slow-handshake":
        try:
            delay = float(query.get("delay", "5"))
        except ValueError:
            delay = 5.0
        log(f"slow handshake: sleeping {delay}s")
        await asyncio.sleep(delay)
    return None


def make_select_subprotocol(supported: list[str]):
    def select(connection: ServerConnection, offered):  # noqa: ANN001 - websockets' callback signature
        path, _ = request_path(connection)
        if path != "/subprotocol":
            return None
        for name in supported:
            if name in offered:
                return name
        return None

    return select


def make_ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.tls_cert:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.tls_cert, args.tls_key or None)
    if args.tls_client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(args.tls_client_ca)
    if args.tls_max_version == "1.2":
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Future[None]) -> None:
    def run() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        loop.call_soon_threadsafe(lambda: stop.done() or stop.set_result(None))

    threading.Thread(target=run, name="stdin-watch", daemon=True).start()


async def main() -> None:
    parser = argparse.ArgumentParser(description="WebSocket test peer (see the module docstring)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls-cert", help="PEM certificate (chain) for wss://")
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")
    parser.add_argument("--tls-client-ca", help="require client certificates signed by this CA (PEM)")
    parser.add_argument("--tls-max-version", choices=["1.2", "1.3"], help="the newest TLS version offered")
    parser.add_argument("--subprotocols", default="", help="comma-separated subprotocols offered on /subprotocol")
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate")
    parser.add_argument("--deflate-server-max-window-bits", type=int, help="cap the server's deflate window (9-15)")
    parser.add_argument("--deflate-client-max-window-bits", type=int, help="cap the client's deflate window (8-15)")
    parser.add_argument("--deflate-server-no-context-takeover", action="store_true",
                        help="answer with server_no_context_takeover")
    parser.add_argument("--deflate-client-no-context-takeover", action="store_true",
                        help="answer with client_no_context_takeover")
    parser.add_argument("--max-size", type=int, default=MAX_SIZE, help="largest accepted message, bytes")
    parser.add_argument("--watch-stdin", action="store_true", help="exit when stdin reaches EOF")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="ws_server: %(levelname)s %(name)s: %(message)s")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")

    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    if args.watch_stdin:
        watch_stdin(loop, stop)

    supported = [s.strip() for s in args.subprotocols.split(",") if s.strip()]
    deflate_factory = None
    if (args.deflate_server_max_window_bits is not None or args.deflate_client_max_window_bits is not None
            or args.deflate_server_no_context_takeover or args.deflate_client_no_context_takeover):
        deflate_factory = ServerPerMessageDeflateFactory(
            server_no_context_takeover=args.deflate_server_no_context_takeover,
            client_no_context_takeover=args.deflate_client_no_context_takeover,
            server_max_window_bits=args.deflate_server_max_window_bits,
            client_max_window_bits=args.deflate_client_max_window_bits,
        )
    async with serve(
        handler,
        args.host,
        args.port,
        ssl=make_ssl_context(args),
        subprotocols=supported or None,
        select_subprotocol=make_select_subprotocol(supported),
        process_request=process_request,
        compression="deflate" if args.deflate and deflate_factory is None else None,
        extensions=[deflate_factory] if deflate_factory is not None else None,
        max_size=args.max_size,
        max_queue=64,
        ping_interval=None,
        open_timeout=60,
        close_timeout=5,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        log(f"listening on {args.host}:{port} ({'wss' if args.tls_cert else 'ws'})")
        await stop
        log("stopping")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
