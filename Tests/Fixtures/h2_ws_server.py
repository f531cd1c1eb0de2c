"""A WebSocket echo server on Hypercorn (HTTP/2 and HTTP/1.1 over TLS) for the WebSockets-over-HTTP/2 tests.

    h2_ws_server.py MODE CERT KEY

MODE: `h2` (ALPN h2 and http/1.1, SETTINGS_ENABLE_CONNECT_PROTOCOL = 1, as Hypercorn does), `http1` (ALPN
http/1.1 only), `h2-no-connect` (h2 without SETTINGS_ENABLE_CONNECT_PROTOCOL). Prints the port, serves on
127.0.0.1 until stdin closes.

The app echoes text and binary messages and answers these texts:
  `stats`          -> `connections=N` (distinct client TCP connections seen: (host, port) of the ASGI scope)
                      and `http=V` (the HTTP version of this session), e.g. `connections=1 http=2`
  `close:CODE`     -> the server closes the session with CODE
  `headers`        -> the request headers as `name=value` lines (names lower-case)
  `subprotocol`    -> the subprotocol it selected (`none`): the first one offered

Hypercorn 0.18.0 quirks, worked around here and not in the client:
- (upstream issue #329) it never ends its side of a stream after a client-initiated close; the client resets the
  stream after the close handshake, which frees the slot on both sides. The stream limit is raised to 10000 anyway.
- its priority tree (the `priority` package) refuses more than 1000 open streams and then drops the whole
  connection, whatever SETTINGS_MAX_CONCURRENT_STREAMS it announced; the tree's limit is raised to match below.
- after a server-initiated close it forgets the stream at once, and the client's echo of the close frame (which
  RFC 6455 requires) then raises a KeyError that drops the whole connection. `ignore_data_of_closed_streams`
  below drops such DATA (after acknowledging it for flow control) instead.
"""
import asyncio, os, socket, sys, threading

import h2.events
import h2.settings
from hypercorn.asyncio import serve
from hypercorn.config import Config
import hypercorn.protocol.h2 as hypercorn_h2

MODE, CERT, KEY = sys.argv[1], sys.argv[2], sys.argv[3]

clients = set()


def watch_stdin():
    try:
        sys.stdin.buffer.read()
    finally:
        os._exit(0)


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
    clients.add(tuple(scope.get("client") or ("?", 0)))
    await receive()  # websocket.connect
    offered = scope.get("subprotocols") or []
    chosen = offered[0] if offered else None
    await send({"type": "websocket.accept", "subprotocol": chosen})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text, data = message.get("text"), message.get("bytes")
        if text is not None:
            if text == "stats":
                text = "connections=%d http=%s" % (len(clients), scope.get("http_version"))
            elif text.startswith("close:"):
                await send({"type": "websocket.close", "code": int(text[6:])})
                return
            elif text == "headers":
                text = "\n".join("%s=%s" % (k.decode(), v.decode()) for k, v in scope["headers"])
            elif text == "subprotocol":
                text = chosen or "none"
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": data})


if MODE == "h2-no-connect":
    original_init = hypercorn_h2.H2Protocol.__init__

    def init_without_connect(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        settings = self.connection.local_settings
        self.connection.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: settings.max_header_list_size,
            },
        )

    hypercorn_h2.H2Protocol.__init__ = init_without_connect

class RoomyPriorityTree(hypercorn_h2.priority.PriorityTree):
    def __init__(self, maximum_streams=20000):
        super().__init__(maximum_streams=maximum_streams)


hypercorn_h2.priority.PriorityTree = RoomyPriorityTree

original_dispatch = hypercorn_h2.H2Protocol._handle_events


async def ignore_data_of_closed_streams(self, events):
    kept = []
    for event in events:
        if isinstance(event, h2.events.DataReceived) and event.stream_id not in self.streams:
            try:
                self.connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            except Exception:
                pass
            continue
        kept.append(event)
    await original_dispatch(self, kept)


hypercorn_h2.H2Protocol._handle_events = ignore_data_of_closed_streams

if os.environ.get("H2_SERVER_DEBUG"):
    original_handle_events = hypercorn_h2.H2Protocol._handle_events

    async def logged_handle_events(self, events):
        for event in events:
            print("h2 event", event, file=sys.stderr, flush=True)
        try:
            await original_handle_events(self, events)
        except BaseException as error:
            import traceback; traceback.print_exc(file=sys.stderr)
            raise

    hypercorn_h2.H2Protocol._handle_events = logged_handle_events
    original_stream_send = hypercorn_h2.H2Protocol.stream_send

    async def logged_stream_send(self, event):
        print("h2 send", event, file=sys.stderr, flush=True)
        await original_stream_send(self, event)

    hypercorn_h2.H2Protocol.stream_send = logged_stream_send

listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(1024)
listener.set_inheritable(True)

config = Config()
config.bind = ["fd://%d" % listener.fileno()]
config.certfile, config.keyfile = CERT, KEY
config.alpn_protocols = ["http/1.1"] if MODE == "http1" else ["h2", "http/1.1"]
config.h2_max_concurrent_streams = 10000
config.accesslog = None
config.errorlog = "-" if os.environ.get("H2_SERVER_DEBUG") else None
if os.environ.get("H2_SERVER_DEBUG"):
    import logging
    logging.basicConfig(level=logging.DEBUG)
config.graceful_timeout = 0.1
# Hypercorn closes a connection without streams after 5 s, the time between its SETTINGS and the first request
# included: a test process stalled that long under load would open a second connection. Off (an hour).
config.keep_alive_timeout = 3600

print(listener.getsockname()[1], flush=True)
threading.Thread(target=watch_stdin, daemon=True).start()
asyncio.run(serve(app, config))
