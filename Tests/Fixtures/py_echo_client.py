#!/usr/bin/env python3
"""Stand-in for `wsc echo URL`, used to prove the Autobahn plumbing (scripts/autobahn.sh with WSC_CMD=...).

    .venv/bin/python Tests/Fixtures/py_echo_client.py [--deflate] ws://127.0.0.1:PORT/runCase?case=N&agent=A

Connects, echoes every text and binary message back until the server closes, and exits 0 after a clean close
(closing handshake completed), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

# websockets refuses messages of more than 4096 fragments unless told otherwise (Autobahn 9.3/9.4 send 65536)
os.environ.setdefault("WEBSOCKETS_MAX_FRAGMENTS", str(1 << 20))

from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed


async def run(url: str, deflate: bool) -> int:
    async with connect(
        url,
        compression="deflate" if deflate else None,
        max_size=None,
        max_queue=None,
        ping_interval=None,
        open_timeout=30,
        close_timeout=10,
    ) as connection:
        try:
            async for message in connection:
                await connection.send(message)
        except ConnectionClosed:
            pass
    protocol = connection.protocol
    return 0 if protocol.close_rcvd is not None and protocol.close_sent is not None else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate")
    parser.add_argument("url")
    args = parser.parse_args()
    try:
        return asyncio.run(run(args.url, args.deflate))
    except Exception as error:  # noqa: BLE001 - report any failure as a non-zero exit
        print(f"py_echo_client: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
