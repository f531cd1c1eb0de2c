"""A scripted HTTP/2 server (the `h2` library, over TLS) for the WebSockets-over-HTTP/2 failure tests.

    h2_hostile_server.py MODE CERT KEY

Prints its port and serves on 127.0.0.1 until stdin closes. Every mode announces SETTINGS_ENABLE_CONNECT_PROTOCOL
and answers an extended CONNECT with 200, except:
  `huge-headers`  answers with a 200 whose header block is 1 MiB (2100 fields; one HEADERS and many CONTINUATION frames)
  `continuation`  answers with HEADERS without END_HEADERS, then CONTINUATION frames without end
  `flood`         as `script`, but after the 200 on the connection's first stream, sends 1.1 MB of DATA on it at
                  once, ignoring the client's window
  `limit2`        as `script`, with SETTINGS_MAX_CONCURRENT_STREAMS = 2
  `reject`        as `script`, but answers the connection's first extended CONNECT with 403 and END_STREAM
  `refuse`        as `script`, but resets the connection's first extended CONNECT with RST_STREAM REFUSED_STREAM
  `goaway-first`  as `script`, but answers the first extended CONNECT of the first TCP connection with GOAWAY
                  (NO_ERROR, last stream 0: not processed) and closes that connection
  `goaway-settings-first`  as `script`, but the first TCP connection sends GOAWAY (NO_ERROR, last stream 0) with its
                  SETTINGS, before any request, and processes none (as a server closing a connection that stayed idle)
  `goaway-settings`  every TCP connection does what the first one does in `goaway-settings-first`
In every mode each accepted TCP connection writes `connection N` to stderr before its SETTINGS.
In the other modes (`script`, `limit2`, `reject`, `refuse`, `goaway-first`, `flood`) each WebSocket stream echoes the client's (small, masked) frames, and these texts act:
  `rst`           the server resets this stream (RST_STREAM INTERNAL_ERROR)
  `goaway`        the server sends GOAWAY (NO_ERROR, last stream = the newest); open streams go on
  `stats`         -> `connections=N` (TCP connections accepted so far)
  `lastclose`     -> the code of the last close frame a client sent, and whether END_STREAM came on its DATA
                     frame, e.g. `4002 with END_STREAM`
  `drop`          the server drops the whole TCP connection at once (no GOAWAY, a TCP reset)
  `waitreset`     -> `reset CODE` once the client has reset a stream of this connection (at once if it has), e.g.
                     `reset FLOW_CONTROL_ERROR`
"""
import asyncio, os, ssl, struct, sys, threading

import h2.config, h2.connection, h2.events, h2.settings, h2.errors

MODE, CERT, KEY = sys.argv[1], sys.argv[2], sys.argv[3]
connections = [0]
last_close = ["none"]


def watch_stdin():
    try:
        sys.stdin.buffer.read()
    finally:
        os._exit(0)


def frame(kind, flags, stream_id, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id) + payload


def literal(name, value):
    """An HPACK literal header field without indexing, with short (< 127 bytes) or 2-byte-prefixed lengths."""

    def length(n):
        return bytes([n]) if n < 127 else bytes([127]) + bytes(encode_int(n - 127))

    return b"\x00" + length(len(name)) + name + length(len(value)) + value


def encode_int(n):
    out = []
    while n >= 128:
        out.append((n % 128) + 128)
        n //= 128
    out.append(n)
    return out


def ws_frames(buffer):
    """Complete client frames in `buffer` as (opcode, payload), and the rest."""
    out = []
    while len(buffer) >= 6:
        opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
        offset = 2
        if length == 126:
            length, offset = struct.unpack(">H", buffer[2:4])[0], 4
        elif length == 127:
            length, offset = struct.unpack(">Q", buffer[2:10])[0], 10
        if len(buffer) < offset + 4 + length:
            break
        mask = buffer[offset:offset + 4]
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(buffer[offset + 4:offset + 4 + length]))
        out.append((opcode, payload))
        buffer = buffer[offset + 4 + length:]
    return out, buffer


def server_frame(opcode, payload):
    header = bytes([0x80 | opcode])
    if len(payload) < 126:
        header += bytes([len(payload)])
    elif len(payload) < 65536:
        header += bytes([126]) + struct.pack(">H", len(payload))
    else:
        header += bytes([127]) + struct.pack(">Q", len(payload))
    return header + payload


async def handle(reader, writer):
    connections[0] += 1
    connection = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
    settings = {h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1}
    if MODE == "limit2":
        settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = 2
    connection.local_settings = h2.settings.Settings(client=False, initial_values=settings)
    print("connection %d" % connections[0], file=sys.stderr, flush=True)
    connection.initiate_connection()
    # Written by hand, as for `goaway`, in one write with the SETTINGS (one TLS record): the client sees both at once.
    gone = MODE == "goaway-settings" or (MODE == "goaway-settings-first" and connections[0] == 1)
    writer.write(connection.data_to_send() + (frame(7, 0, 0, struct.pack(">II", 0, 0)) if gone else b""))
    buffers = {}
    resets = []  # error codes of the client's RST_STREAMs on this connection
    reset_waiters = []  # streams waiting for the answer to `waitreset`
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    sid = event.stream_id
                    if gone:
                        continue  # Above the GOAWAY's last stream: not processed.
                    if MODE == "huge-headers":
                        block = b"\x88" + b"".join(literal(b"x-big-%d" % i, b"a" * 500) for i in range(2100))
                        writer.write(frame(1, 0, sid, block[:16384]))
                        for start in range(16384, len(block), 16384):
                            end = start + 16384
                            writer.write(frame(9, 4 if end >= len(block) else 0, sid, block[start:end]))
                        await writer.drain()
                        continue
                    if MODE == "continuation":
                        writer.write(frame(1, 0, sid, b"\x88"))
                        filler = literal(b"x-filler", b"f" * 100)
                        while True:
                            writer.write(frame(9, 0, sid, filler))
                            await writer.drain()
                    if MODE == "refuse" and sid == 1:
                        connection.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
                        continue
                    if MODE == "goaway-first" and sid == 1 and connections[0] == 1:
                        # Written by hand, as for `goaway`; then the connection closes, as a server going away does.
                        writer.write(connection.data_to_send())
                        writer.write(frame(7, 0, 0, struct.pack(">II", 0, 0)))
                        await writer.drain()
                        writer.close()
                        return
                    if MODE == "reject" and sid == 1:
                        connection.send_headers(sid, [(":status", "403"), ("x-reason", "no")], end_stream=True)
                        continue
                    connection.send_headers(sid, [(":status", "200")])
                    buffers[sid] = b""
                    if MODE == "flood" and sid == 1:
                        writer.write(connection.data_to_send())
                        chunk = server_frame(2, b"x" * 16000)
                        for _ in range(70):
                            writer.write(frame(0, 0, sid, chunk))
                        await writer.drain()
                elif isinstance(event, h2.events.DataReceived):
                    sid = event.stream_id
                    connection.acknowledge_received_data(event.flow_controlled_length, sid)
                    frames, buffers[sid] = ws_frames(buffers.get(sid, b"") + event.data)
                    for opcode, payload in frames:
                        if opcode == 8:
                            code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else "none"
                            ended = "with" if event.stream_ended is not None else "without"
                            last_close[0] = "%s %s END_STREAM" % (code, ended)
                        if opcode == 1 and payload == b"lastclose":
                            payload = last_close[0].encode()
                        if opcode == 1 and payload == b"rst":
                            connection.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
                            break
                        if opcode == 1 and payload == b"goaway":
                            # Written by hand: the h2 library refuses to send anything after its own GOAWAY.
                            writer.write(connection.data_to_send())
                            last = connection.highest_inbound_stream_id
                            writer.write(frame(7, 0, 0, struct.pack(">II", last, 0)))
                            payload = b"goaway-sent"
                        if opcode == 1 and payload == b"stats":
                            payload = b"connections=%d" % connections[0]
                        if opcode == 1 and payload == b"drop":
                            writer.transport.abort()
                            return
                        if opcode == 1 and payload == b"waitreset":
                            if not resets:
                                reset_waiters.append(sid)
                                continue
                            payload = b"reset " + resets[0].encode()
                        try:
                            connection.send_data(sid, server_frame(opcode, payload), end_stream=opcode == 8)
                        except Exception:
                            pass
                elif isinstance(event, h2.events.StreamReset):
                    resets.append(h2.errors.ErrorCodes(event.error_code).name)
                    for waiter in reset_waiters:
                        connection.send_data(waiter, server_frame(1, b"reset " + resets[0].encode()))
                    reset_waiters.clear()
                elif isinstance(event, h2.events.StreamEnded):
                    try:
                        connection.end_stream(event.stream_id)
                    except Exception:
                        pass
            writer.write(connection.data_to_send())
            await writer.drain()
    except Exception as error:
        print("connection ended:", repr(error), file=sys.stderr, flush=True)
    finally:
        writer.close()


async def main():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(CERT, KEY)
    context.set_alpn_protocols(["h2"])
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


threading.Thread(target=watch_stdin, daemon=True).start()
asyncio.run(main())
