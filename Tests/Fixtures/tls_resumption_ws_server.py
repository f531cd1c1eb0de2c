#!/usr/bin/env python3
"""TLS session resumption peer (engine-neutral): a wss echo server on 127.0.0.1 that tells the client, per
connection, whether its TLS handshake resumed a session. (tls_resumption_server.py is the same idea without
WebSocket: plain TLS with a greeting line, for engine-level tests.)

    .venv/bin/python Tests/Fixtures/tls_resumption_ws_server.py --cert C --key K [--ports N]
        [--max-version TLSv1_2] [--ticket-budget N] [--proxy] [--http2 [--max-streams N]]

Every listening port shares ONE server SSLContext, so one set of session ticket keys: a ticket the server issued on
one port is accepted on any other, and on any name the certificate covers. A client that offers a session where it
should not (another port, another name) is therefore caught resuming, not saved by the server refusing it.

The WebSocket text `tls` is answered with `reused=<0|1> version=<TLSv1.x> port=<local port>` for the TLS connection
the session runs on (`ssl_object.session_reused`); everything else is echoed.

stdout, one line each, flushed:
    PORT <n>                          the first listening port, first
    PORTS <n> [<n> ...]               every listening port (--ports, default 1), once all listen
    PROXY <n>                         with --proxy: the port of an https:// CONNECT proxy (after PORTS)
    SESSION <port> reused=<0|1>       a WebSocket session opened on that port over a resumed (1) or full (0) handshake
    CONNECTION <port> reused=<0|1>    with --http2: a TLS connection accepted on that port (before its sessions)
    TUNNEL reused=<0|1> <host:port>   with --proxy: a TLS connection to the proxy asked for a tunnel to host:port
The server exits when stdin reaches EOF.

--max-version TLSv1_2 serves TLS 1.2 only (sessions by ticket, RFC 5077). --ticket-budget N (TLS 1.3): one ticket
per handshake (OpenSSL's default is two after a full handshake) until N were issued, then none, so that a client
which uses a ticket twice is seen resuming where it should not (not with --http2). --proxy also serves an https:// proxy (HTTP CONNECT
over TLS, with a server context of its own and the same certificate) that tunnels to any host:port (not with
--http2). --http2 serves with Hypercorn instead:
ALPN h2 and http/1.1, WebSockets over HTTP/2 (RFC 8441) and HTTP/1.1; --max-streams sets the HTTP/2
SETTINGS_MAX_CONCURRENT_STREAMS (1 makes a client open a second connection for a second concurrent session).
Hypercorn's keep-alive timeout is off (an hour): it closes a connection that carries no stream for 5 s, the time
between its SETTINGS and the first request included, so a test process stalled that long under load would see its
first connection closed and open another one, which resumes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import ssl
import sys
import threading
import warnings

warnings.simplefilter("ignore", DeprecationWarning)


def say(line: str) -> None:
    print(line, flush=True)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ports", type=int, default=1)
    parser.add_argument("--max-version", choices=["TLSv1_2", "TLSv1_3"])
    parser.add_argument("--http2", action="store_true")
    parser.add_argument("--max-streams", type=int, default=100)
    parser.add_argument("--ticket-budget", type=int)
    parser.add_argument("--proxy", action="store_true")
    return parser.parse_args()


def server_context(args: argparse.Namespace) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    if args.max_version:
        context.maximum_version = getattr(ssl.TLSVersion, args.max_version)
    if args.ticket_budget is not None:
        context.num_tickets = 1 if args.ticket_budget > 0 else 0
    return context


class TicketBudget:
    """--ticket-budget: counts the handshakes that issued a ticket and stops the context issuing more. A connection
    takes `num_tickets` from the context when it is accepted, so sequential connections see the change."""

    def __init__(self, context: ssl.SSLContext, budget: int | None) -> None:
        self.context, self.left = context, budget

    def handshake_done(self, ssl_object) -> None:
        if self.left is None or ssl_object is None or self.left <= 0:
            return
        self.left -= 1
        if self.left == 0:
            self.context.num_tickets = 0


def describe(ssl_object, port: int) -> str:
    if ssl_object is None:
        return f"reused=0 version=- port={port}"
    return f"reused={int(ssl_object.session_reused)} version={ssl_object.version()} port={port}"


def listeners(count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        listener.set_inheritable(True)
        sockets.append(listener)
    return sockets


def announce(sockets: list[socket.socket]) -> None:
    ports = [str(listener.getsockname()[1]) for listener in sockets]
    say(f"PORT {ports[0]}")
    say(f"PORTS {' '.join(ports)}")


def watch_stdin(on_eof) -> None:
    def run() -> None:
        try:
            sys.stdin.buffer.read()
        finally:
            on_eof()

    threading.Thread(target=run, daemon=True).start()


# --- HTTP/1.1 (websockets) ------------------------------------------------------------------------------------------


async def serve_websockets(args: argparse.Namespace, sockets: list[socket.socket]) -> None:
    from websockets.asyncio.server import serve

    context = server_context(args)
    budget = TicketBudget(context, args.ticket_budget)

    async def handler(websocket) -> None:
        ssl_object = websocket.transport.get_extra_info("ssl_object")
        port = websocket.transport.get_extra_info("sockname")[1]
        budget.handshake_done(ssl_object)
        say(f"SESSION {port} reused={int(bool(ssl_object and ssl_object.session_reused))}")
        async for message in websocket:
            if message == "tls":
                await websocket.send(describe(ssl_object, port))
            else:
                await websocket.send(message)

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, _context: None)  # clients that go away mid-handshake are fine here
    stop = asyncio.Event()
    watch_stdin(lambda: loop.call_soon_threadsafe(stop.set))
    servers = [await serve(handler, sock=listener, ssl=context).__aenter__() for listener in sockets]
    announce(sockets)
    if args.proxy:
        proxy = await asyncio.start_server(tunnel, "127.0.0.1", 0, ssl=server_context(args))
        say(f"PROXY {proxy.sockets[0].getsockname()[1]}")
    await stop.wait()
    for server in servers:
        server.close()
    os._exit(0)


async def tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """--proxy: one CONNECT request over the proxy's TLS, then bytes both ways."""
    ssl_object = writer.get_extra_info("ssl_object")
    try:
        request = await reader.readuntil(b"\r\n\r\n")
        method, target = request.split(b"\r\n", 1)[0].decode().split(" ")[:2]
        say(f"TUNNEL reused={int(bool(ssl_object and ssl_object.session_reused))} {target}")
        host, port = target.rsplit(":", 1)
        if method != "CONNECT":
            raise ValueError(method)
        upstream_reader, upstream_writer = await asyncio.open_connection(host.strip("[]"), int(port))
    except Exception:  # noqa: BLE001
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        writer.close()
        return
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except Exception:  # noqa: BLE001
            pass
        finally:
            sink.close()

    await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


# --- HTTP/2 (Hypercorn) ---------------------------------------------------------------------------------------------


def serve_hypercorn(args: argparse.Namespace, sockets: list[socket.socket]) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config
    import hypercorn.asyncio.tcp_server as tcp_server

    # What each client connection's handshake was, by the client's (host, port): Hypercorn's ASGI scope has the
    # client's address but not the TLS object.
    handshakes: dict[tuple[str, int], object] = {}
    original_run = tcp_server.TCPServer.run

    async def recording_run(self) -> None:
        peer = self.writer.get_extra_info("peername")
        if peer is not None:
            ssl_object = self.writer.get_extra_info("ssl_object")
            handshakes[(peer[0], peer[1])] = ssl_object
            port = self.writer.get_extra_info("sockname")[1]
            say(f"CONNECTION {port} reused={int(bool(ssl_object and ssl_object.session_reused))}")
        await original_run(self)

    tcp_server.TCPServer.run = recording_run

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "websocket":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"websocket only"})
            return
        client = tuple(scope.get("client") or ("?", 0))
        ssl_object = handshakes.get((client[0], client[1]))
        port = (scope.get("server") or ("?", 0))[1]
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        say(f"SESSION {port} reused={int(bool(ssl_object and ssl_object.session_reused))}")
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            text, data = message.get("text"), message.get("bytes")
            if text is not None:
                reply = describe(ssl_object, port) + f" http={scope.get('http_version')}" if text == "tls" else text
                await send({"type": "websocket.send", "text": reply})
            else:
                await send({"type": "websocket.send", "bytes": data})

    config = Config()
    config.bind = [f"fd://{listener.fileno()}" for listener in sockets]
    config.certfile, config.keyfile = args.cert, args.key
    config.alpn_protocols = ["h2", "http/1.1"]
    config.h2_max_concurrent_streams = args.max_streams
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.1
    config.keep_alive_timeout = 3600  # See the module's comment.
    # One SSLContext for every port (Hypercorn makes one per server from this method).
    shared = config.create_ssl_context()
    if args.max_version:
        shared.maximum_version = getattr(ssl.TLSVersion, args.max_version)
    config.create_ssl_context = lambda: shared
    announce(sockets)
    watch_stdin(lambda: os._exit(0))
    asyncio.run(serve(app, config))


def main() -> None:
    args = parse_arguments()
    sockets = listeners(max(1, args.ports))
    if args.http2:
        serve_hypercorn(args, sockets)
    else:
        asyncio.run(serve_websockets(args, sockets))


if __name__ == "__main__":
    main()
