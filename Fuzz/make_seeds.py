#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into Fuzz/corpus/<target>/ (run: python3 Fuzz/make_seeds.py).

The seeds are committed; rerun this only to change them. Each seed is a meaningful input in the layout of its
target's oracle (Docs/Fuzzing.md, and the doc comments in Tests/WSCoreTests/FuzzRegressionTests.swift and
Tests/WSExtensionsTests/InflateFuzzRegressionTests.swift): configuration bytes first, then the data.
"""
import os
import shutil
import struct
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def deflate_message(data, wbits=15, level=6, final=False):
    """A permessage-deflate payload: raw DEFLATE, sync-flushed, without the 00 00 FF FF tail."""
    c = zlib.compressobj(level, zlib.DEFLATED, -wbits)
    out = c.compress(data) + c.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)
    if not final and out.endswith(b"\x00\x00\xff\xff"):
        out = out[:-4]
    return out


def frame(opcode, payload, fin=True, rsv=0, mask=None, length_bytes=None):
    """One RFC 6455 frame; `length_bytes` forces a 2- or 8-byte extended length (non-minimal is legal)."""
    b0 = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if length_bytes == 8 or (length_bytes is None and n > 0xFFFF):
        head = bytes([b0, mbit | 127]) + struct.pack(">Q", n)
    elif length_bytes == 2 or (length_bytes is None and n > 125):
        head = bytes([b0, mbit | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, mbit | n])
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


def frame_input(stream, role_server=False, rsv_allowed=0, max_frame=7, pad=False, letter=0x21, big_chunks=False,
                lend=False, max_message=5, max_fragments=5, chunks=(1,)):
    """FuzzFrameDecoder: byte 0 role/RSV/maxFrameSize/pad, byte 1 letter/scale/lend, byte 2 limits, chunk sizes."""
    c0 = (1 if role_server else 0) | (rsv_allowed >> 4) << 1 | max_frame << 4 | (0x80 if pad else 0)
    c1 = (letter & 0x3F) | (0x40 if big_chunks else 0) | (0x80 if lend else 0)
    c2 = max_message | max_fragments << 4
    sizes = bytes([len(chunks) - 1]) + bytes(s - 1 for s in chunks)
    return bytes([c0, c1, c2]) + sizes + stream


def http_input(stream, max_bytes=0, max_count=0, request=False, big_chunks=False, chunks=(1,)):
    """FuzzHTTPResponse: byte 0 limits/request/scale, then chunk sizes."""
    c0 = max_bytes | max_count << 2 | (0x10 if request else 0) | (0x20 if big_chunks else 0)
    return bytes([c0, len(chunks) - 1]) + bytes(s - 1 for s in chunks) + stream


def utf8_input(data, splits=()):
    """FuzzUTF8: byte 0 the number of split points, then each as a fraction (0-255) of the data length."""
    return bytes([len(splits)]) + bytes(splits) + data


CONT, TEXT, BINARY, FIN = 0, 1, 2, 4


def streaming_input(frames, limit=0):
    """FuzzStreamingAssembler: byte 0 the limit (0 none, else byte * 8), then per frame a control byte (bits 0-1:
    0 continuation, 1 or 3 text, 2 binary; bit 2 FIN), a length byte and the payload."""
    return bytes([limit]) + b"".join(bytes([control, len(payload)]) + payload for control, payload in frames)

def inflate_input(messages, wbits=15, keep_window=True, round_trip=False, limit=6, level=6):
    """FuzzInflate: byte 0 window/takeover/mode/limit, byte 1 message count/level, split bytes, data."""
    c0 = (wbits - 8) | (0x08 if keep_window else 0) | (0x10 if round_trip else 0) | limit << 5
    c1 = (len(messages) - 1) | (level % 10) << 2
    data = b"".join(messages)
    splits, at = [], 0
    for m in messages[:-1]:
        at += len(m)
        # The oracle cuts at split * len(data) // 255: pick the byte that lands exactly on the boundary.
        split = next(s for s in range(256) if s * len(data) // 255 == at)
        splits.append(split)
    return bytes([c0, c1]) + bytes(splits) + data


RFC_MASK = bytes([0x37, 0xFA, 0x21, 0x3D])
HANDSHAKE = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n"
    b"Sec-WebSocket-Protocol: chat\r\n\r\n"
)

SEEDS = {
    "FuzzFrameDecoder": {
        "text-hello-1byte-chunks": frame_input(frame(1, b"Hello")),
        "text-fragmented": frame_input(frame(1, b"Hel", fin=False) + frame(0, b"lo"), chunks=(3, 2)),
        "lent-input-frames-across-chunks": frame_input(
            frame(1, b"Hello") + frame(2, b"x" * 300) + frame(9, b"") + frame(1, b"tail"), lend=True, chunks=(9, 4, 256)
        ),
        "lent-input-68k-direct-fill": frame_input(
            bytes([0x82, 0x7F]) + struct.pack(">Q", 68 * 1024) + b"head", pad=True, big_chunks=True, lend=True,
            chunks=(3, 200),
        ),
        "lent-input-masked-server-role": frame_input(
            frame(1, b"Hello", mask=RFC_MASK) * 3, role_server=True, lend=True, chunks=(5, 13)
        ),
        "lent-input-error-mid-chunk": frame_input(
            frame(1, b"ok") + bytes([0x83, 0x00]) + b"junk", lend=True, chunks=(6,)
        ),
        "ping-between-fragments": frame_input(
            frame(1, "κό".encode(), fin=False) + frame(9, b"ping") + frame(0, "σμε".encode()), chunks=(5, 1, 7)
        ),
        "utf8-split-inside-codepoint": frame_input(
            frame(1, "κόσμε".encode()[:3], fin=False) + frame(0, "κόσμε".encode()[3:]), chunks=(4,)
        ),
        "utf8-invalid-surrogate": frame_input(frame(1, b"ab\xed\xa0\x80cd"), chunks=(3,)),
        "binary-16bit-length": frame_input(frame(2, bytes(range(256))), chunks=(7, 100)),
        "binary-nonminimal-64bit-length": frame_input(frame(2, b"abc", length_bytes=8), chunks=(2,)),
        # A 68 KiB frame declared and started; the oracle pads it to completion (the decoder's direct-fill path).
        "binary-68k-padded-direct-fill": frame_input(
            bytes([0x82, 0x7F]) + struct.pack(">Q", 68 * 1024) + b"head", pad=True, big_chunks=True, chunks=(16, 200)
        ),
        "server-role-masked-rfc": frame_input(frame(1, b"Hello", mask=RFC_MASK), role_server=True, chunks=(3,)),
        "rsv1-compressed-rfc7692": frame_input(
            bytes([0xC1, 0x07, 0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00]), rsv_allowed=0x40
        ),
        "close-1000-bye": frame_input(frame(8, b"\x03\xe8bye") + frame(1, b"after")),
        "pong-then-text": frame_input(frame(10, b"") + frame(1, b"x" * 200), chunks=(50,)),
        "error-reserved-opcode": frame_input(frame(1, b"ok") + bytes([0x83, 0x00])),
        "error-rsv2-without-extension": frame_input(bytes([0xA1, 0x00])),
        "error-fragmented-ping": frame_input(bytes([0x09, 0x00])),
        "error-control-126": frame_input(bytes([0x89, 0x7E, 0x00, 0x7E]) + b"p" * 126),
        "error-length-msb": frame_input(bytes([0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 1])),
        "error-too-big-for-125": frame_input(frame(2, b"y" * 126), max_frame=2),
        "error-masked-from-server": frame_input(frame(1, b"Hello", mask=RFC_MASK)),
        "error-continuation-without-start": frame_input(frame(0, b"x")),
        "error-too-many-fragments": frame_input(
            frame(2, b"a", fin=False) + frame(0, b"b", fin=False) + frame(0, b"c", fin=False) + frame(0, b"d"),
            max_fragments=3,
        ),
        "error-message-too-big": frame_input(frame(1, b"a" * 100, fin=False) + frame(0, b"b" * 100), max_message=2),
    },
    "FuzzHTTPResponse": {
        "101-crlf-1byte-chunks": http_input(HANDSHAKE),
        "101-then-frame-bytes": http_input(HANDSHAKE + b"\x81\x05Hello", chunks=(64, 3)),
        "101-bare-lf": http_input(HANDSHAKE.replace(b"\r\n", b"\n"), chunks=(10,)),
        "two-heads": http_input(b"HTTP/1.1 100 Continue\r\n\r\n" + HANDSHAKE, chunks=(17,)),
        "302-redirect": http_input(
            b"HTTP/1.1 302 Found\r\nLocation: wss://example.com/\r\nContent-Length: 0\r\n\r\n", chunks=(5, 9)
        ),
        "status-without-reason": http_input(b"HTTP/1.0 101\r\nUpgrade: websocket\r\n\r\n", chunks=(12,)),
        "error-bare-cr": http_input(b"HTTP/1.1 101 OK\rUpgrade: websocket\r\n\r\n"),
        "error-obs-fold": http_input(b"HTTP/1.1 101 OK\r\nUpgrade:\r\n websocket\r\n\r\n", chunks=(8,)),
        "error-status-line": http_input(b"HTTP/2 101 Switching\r\n\r\n"),
        "error-control-in-value": http_input(b"HTTP/1.1 101 OK\r\nX-A: a\x01b\r\n\r\n"),
        "error-too-many-fields": http_input(b"HTTP/1.1 101 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", max_count=3),
        "error-head-too-big": http_input(HANDSHAKE, max_bytes=1, chunks=(32,)),
        "request-get": http_input(
            b"GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            request=True,
            chunks=(20,),
        ),
    },
    "FuzzExtensionHeader": {
        "deflate-bare": b"permessage-deflate",
        "deflate-offer": b"permessage-deflate; client_max_window_bits",
        "deflate-params": b"permessage-deflate; server_max_window_bits=10; client_no_context_takeover",
        "two-offers": b"permessage-deflate; client_max_window_bits=12, permessage-deflate",
        "quoted-value": b'permessage-deflate; client_max_window_bits="15"',
        "quoted-escape": b'x; a="b\\c"',
        "two-lines": b"foo\nbar; baz=1 ;qux",
        "empty-elements": b", ,foo,,\t,",
        "error-quoted-space": b'x; y="a b"',
        "error-missing-param": b"a;;",
        "error-unterminated-quote": b'a; b="c',
        "error-space-in-name": b"perm essage",
        "utf8-in-value": "x; y=é".encode(),
    },
    "FuzzClosePayload": {
        "empty": b"",
        "one-byte": b"\x03",
        "1000": b"\x03\xe8",
        "1000-bye": b"\x03\xe8bye",
        "1001-utf8-reason": b"\x03\xe9" + "κόσμε".encode(),
        "1005-not-on-wire": b"\x03\xed",
        "1004-reserved": b"\x03\xec",
        "1014-registered": b"\x03\xf6",
        "1016-unassigned": b"\x03\xf8",
        "2999": b"\x0b\xb7",
        "3000": b"\x0b\xb8",
        "4999": b"\x13\x87",
        "5000": b"\x13\x88",
        "invalid-utf8-reason": b"\x03\xe8\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80",
        "max-123-byte-reason": b"\x03\xe8" + b"r" * 123,
        "long-multibyte-reason": b"\x0f\xa0" + "€".encode() * 60,
    },
    "FuzzUTF8": {
        "ascii": utf8_input(b"Hello, world! " * 8, splits=(3, 77)),
        "kosme-split-in-codepoints": utf8_input("κόσμε".encode(), splits=(20, 90, 200)),
        "four-byte-emoji": utf8_input("a😀b𝄞c".encode(), splits=(40, 41, 120)),
        "surrogate": utf8_input(b"ab\xed\xa0\x80cd", splits=(100,)),
        "overlong": utf8_input(b"\xc0\xaf", splits=(128,)),
        "above-10ffff": utf8_input(b"x\xf4\x90\x80\x80", splits=(60,)),
        "truncated-end": utf8_input(b"abc\xe2\x82", splits=()),
        "max-codepoint": utf8_input(b"\xf4\x8f\xbf\xbf" * 5, splits=(10, 20, 30, 40, 50, 60, 70)),
        "e0-boundaries": utf8_input(b"\xe0\xa0\x80\xe0\x9f\xbf", splits=(85,)),
        "mixed-long": utf8_input(("Ünïcödé ☃ " * 20).encode() + b"\xff", splits=(17, 128, 250)),
    },
    "FuzzInflate": {
        "rfc7692-hello": inflate_input([bytes.fromhex("f248cdc9c90700")], limit=3),
        "rfc7692-hello-limit-1": inflate_input([bytes.fromhex("f248cdc9c90700")], limit=1),
        "rfc7692-context-takeover": inflate_input([bytes.fromhex("f248cdc9c90700"), bytes.fromhex("f200110000")]),
        "stored-block": inflate_input([b"\x00\x05\x00\xfa\xffHello"], limit=3),
        "bfinal-then-next-message": inflate_input(
            [deflate_message(b"first message", final=True), deflate_message(b"second message")]
        ),
        "window-9-no-takeover": inflate_input(
            [deflate_message(b"abc" * 50, wbits=9), deflate_message(b"abc" * 50, wbits=9)],
            wbits=9,
            keep_window=False,
            limit=4,
        ),
        "bomb-1mib-zeros": inflate_input([deflate_message(bytes(1 << 20), level=9)], limit=6),
        "bomb-just-over-limit": inflate_input([deflate_message(b"z" * 257)], limit=4),
        "exactly-at-limit": inflate_input([deflate_message(b"q" * 256)], limit=4),
        "corrupt": inflate_input([b"\xff\xff\xff\xff"]),
        "round-trip-text": inflate_input([b"Hello " * 30, b"Hello again " * 10], round_trip=True, limit=6),
        "round-trip-window-8": inflate_input(
            [bytes((i * 7 + i // 3) % 251 for i in range(3000))], wbits=8, round_trip=True, limit=6, level=9
        ),
        "round-trip-over-limit": inflate_input([b"0123456789" * 30], round_trip=True, limit=4, level=1),
    },
    "FuzzStreamingAssembler": {
        "binary-fragments": streaming_input([(BINARY, b"\xff\x00"), (CONT | FIN, b"\x01")]),
        "continuation-first": streaming_input([(CONT | FIN, b"abc")]),
        "ends-mid-char": streaming_input([(3, "aé".encode()), (CONT | FIN, b"\xe2")]),
        "invalid-utf8": streaming_input([(TEXT, b"\xed\xa0"), (CONT | FIN, b"\x80")]),
        "limit-exceeded": streaming_input([(BINARY, b"x" * 6), (CONT | FIN, b"y" * 6)], limit=1),
        "new-message-mid": streaming_input([(TEXT, b"ab"), (BINARY | FIN, b"c")]),
        "text-split-in-char": streaming_input(
            [(TEXT, "aé".encode()[:2]), (CONT, "é€".encode()[1:4]), (CONT | FIN, "€😀".encode()[2:])]
        ),
    },
}


def main():
    for target, seeds in SEEDS.items():
        folder = os.path.join(ROOT, target)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        for name, data in seeds.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
        print(f"{target}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
