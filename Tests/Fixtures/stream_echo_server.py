"""A streaming echo peer for the streaming-message proofs (Tests/WSIntegrationTests/StreamingProofTests.swift).

Echoes every message fragment by fragment as it arrives (websockets' recv_streaming() into send() of an async
iterator), so neither side holds a whole message; offers permessage-deflate with --deflate. Prints "PORT n" once
listening; exits when stdin reaches EOF.
"""
import argparse
import asyncio
import sys
import threading

from websockets.asyncio.server import serve


async def echo(ws):
    try:
        while True:
            await ws.send(ws.recv_streaming())
    except Exception:
        pass


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--deflate", action="store_true")
    args = parser.parse_args()
    stop = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set_result, None)),
                     daemon=True).start()
    async with serve(echo, "127.0.0.1", 0, max_size=None, max_queue=4,
                     compression="deflate" if args.deflate else None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        await stop


asyncio.run(main())
