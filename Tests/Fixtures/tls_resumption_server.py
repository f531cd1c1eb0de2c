#!/usr/bin/env python3
"""TLS session resumption peer for the engine tests: a TLS server (Python stdlib: asyncio + ssl, no WebSocket) on
127.0.0.1 that tells each client whether its TLS session was resumed. Engine-neutral: any engine's transport (or
`openssl s_client -sess_out/-sess_in`) can read what it says.

    python3 Tests/Fixtures/tls_resumption_server.py --cert C --key K [--listeners N]

It listens on N ports (default 2) with ONE ssl.SSLContext, so that all of them accept the same session tickets: a
client that offered a ticket of one port on another would be resumed there, which a test can see.

stdout, one line each, flushed:
    PORTS <port> [<port> ...]         listening (first line)
    CONNECTION <port> resumed|full    a handshake was completed on that port (stdout, for a test reading the log)
Each client receives, right after its handshake, one line over TLS: `resumed\n` or `full\n`
(`ssl_object.session_reused`), then everything it sends is echoed. TLS 1.3 and 1.2 both work (the server sends
session tickets; OpenSSL's defaults). The server exits when stdin reaches EOF.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
import threading


def say(line: str) -> None:
    """Prints a line; a reader that stopped listening after the first line (a closed pipe) is no error."""
    try:
        print(line, flush=True)
    except OSError:
        pass


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        port = writer.get_extra_info("sockname")[1]
        reused = "resumed" if ssl_object is not None and ssl_object.session_reused else "full"
        say(f"CONNECTION {port} {reused}")
        writer.write(f"{reused}\n".encode())
        await writer.drain()
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except Exception:  # noqa: BLE001 - a client that goes away is not an error here
        pass
    finally:
        try:
            writer.close()
            await writer.wait_closed()
        except Exception:  # noqa: BLE001
            pass


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--listeners", type=int, default=2)
    args = parser.parse_args()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, _context: None)  # failed handshakes are the client's business
    servers = [await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context) for _ in range(args.listeners)]
    ports = [server.sockets[0].getsockname()[1] for server in servers]
    print("PORTS " + " ".join(str(port) for port in ports), flush=True)

    def watch_stdin() -> None:
        try:
            sys.stdin.buffer.read()
        finally:
            os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    asyncio.run(main())
