#!/usr/bin/env python3
"""TLS probe server for the security tests (Tests/WSIntegrationTests/SecurityTests.swift): a wss echo server on
127.0.0.1 that reports what the client's TLS handshake carried.

    .venv/bin/python Tests/Fixtures/tls_probe_server.py --cert C --key K [--max-version TLSv1_1]

stdout, one line each, flushed:
    PORT <n>                    listening (first line)
    SELFTEST <version>          with --max-version: a local client completed a handshake at that version, so a
                                client that refuses this server refuses the version, not a broken server
    SNI <name>                  a ClientHello's server_name ("-" when the client sent none)
    CONNECTED <version>         a WebSocket session was opened over that TLS version
The server exits when stdin reaches EOF.

--max-version TLSv1 / TLSv1_1 serves only that old version. OpenSSL 3 refuses TLS 1.0/1.1 at its default security
level (their handshake signatures use SHA-1), so the server then lowers its own level with "DEFAULT@SECLEVEL=0".
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

from websockets.asyncio.server import serve

warnings.simplefilter("ignore", DeprecationWarning)


def say(line: str) -> None:
    print(line, flush=True)


def server_context(args: argparse.Namespace) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    if args.max_version:
        version = getattr(ssl.TLSVersion, args.max_version)
        context.set_ciphers("DEFAULT@SECLEVEL=0")
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = version

    def on_sni(_sslobj, name, _context):
        say(f"SNI {name or '-'}")
        return None

    context.sni_callback = on_sni
    return context


def self_test(port: int, version_name: str) -> None:
    """Connects with a client that allows exactly the old version and prints the version negotiated."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT@SECLEVEL=0")
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = getattr(ssl.TLSVersion, version_name)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="selftest.invalid") as tls:
                say(f"SELFTEST {tls.version()}")
    except Exception as error:  # noqa: BLE001
        say(f"SELFTEST failed {error}")


async def handler(websocket) -> None:
    ssl_object = websocket.transport.get_extra_info("ssl_object")
    say(f"CONNECTED {ssl_object.version() if ssl_object else '-'}")
    async for message in websocket:
        await websocket.send(message)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--max-version", choices=["TLSv1", "TLSv1_1", "TLSv1_2", "TLSv1_3"])
    args = parser.parse_args()

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, _context: None)  # failed handshakes are expected here
    stop = asyncio.Event()

    def watch_stdin() -> None:
        try:
            sys.stdin.buffer.read()
        finally:
            loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    async with serve(handler, "127.0.0.1", 0, ssl=server_context(args)) as server:
        port = server.sockets[0].getsockname()[1]
        say(f"PORT {port}")
        if args.max_version:
            await loop.run_in_executor(None, self_test, port, args.max_version)
        await stop.wait()
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main())
