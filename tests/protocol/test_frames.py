"""The frame reader and writer of turbows' native uvicorn protocol (``turbows._frames_c``)."""

from __future__ import annotations

import pytest
from turbows._frames_c import FrameParser, encode_frame, utf8_valid
from wsframes import mask_frame

TEXT, BINARY, CONT, CLOSE, PING, PONG = 1, 2, 0, 8, 9, 10


def feed_in_pieces(parser: FrameParser, data: bytes, size: int) -> list:
    events = []
    for i in range(0, len(data), size):
        events += parser.feed_data(data[i : i + size])
    return events


# Every length class (7-bit, 16-bit, 64-bit) split every way; byte-by-byte
# feeding only over the small frames, where it is quick.
SPLITS = [
    (n, piece)
    for n in (0, 1, 2, 5, 125, 126, 127, 65535, 65536, 70000)
    for piece in (1, 3, 7, 1 << 20)
    if piece >= 7 or n <= 1000
]


@pytest.mark.parametrize("n, piece", SPLITS)
def test_lengths_and_any_split(n: int, piece: int) -> None:
    payload = bytes(i % 251 for i in range(n))
    data = mask_frame(BINARY, payload) + mask_frame(TEXT, b"ok")
    assert feed_in_pieces(FrameParser(), data, piece) == [
        (BINARY, True, False, payload),
        (TEXT, True, False, b"ok"),
    ]


# Slicing one byte out of a bytes object gives CPython's cached 1-byte object for it.
ALL_BYTES = bytes(range(256))


def test_unmasks_into_its_own_memory_never_into_the_input_or_shared_objects() -> None:
    # An unmasking bug that writes in place corrupts what it writes into: the caller's
    # input, or, where a payload object is made from the masked bytes (for one byte,
    # CPython's cached object of the *masked* value), that shared object. Both are
    # checked after every 1-byte payload under two keys, fed as bytes and as a
    # bytearray, whole and in pieces that are views of it.
    assert ALL_BYTES[7:8] is ALL_BYTES[7:8]  # the cache this test watches is there
    for key in (b"\x01\x02\x03\x04", b"\xff\x80\x7f\x00"):
        for value in range(256):
            frame = mask_frame(BINARY, bytes([value]), key=key) + mask_frame(TEXT, b"ok", key=key)
            original = bytes(bytearray(frame))  # a separate object to compare with
            for data in (frame, bytearray(frame)):
                view = memoryview(data)
                for piece in (1, 3, len(frame)):
                    parser = FrameParser()
                    events = []
                    for i in range(0, len(frame), piece):
                        events += parser.feed_data(data if piece == len(frame) else view[i : i + piece])
                    assert events == [(BINARY, True, False, bytes([value])), (TEXT, True, False, b"ok")]
                    assert bytes(data) == original, "the input was written to"
    corrupted = [i for i in range(256) if ALL_BYTES[i : i + 1][0] != i]
    assert corrupted == [], f"CPython's cached 1-byte objects for {corrupted} were written to"


def test_fragments_with_control_frames_interleaved() -> None:
    data = (
        mask_frame(TEXT, b"he", fin=False)
        + mask_frame(PING, b"p")
        + mask_frame(CONT, b"ll", fin=False)
        + mask_frame(PONG, b"")
        + mask_frame(CONT, b"o")
    )
    assert feed_in_pieces(FrameParser(), data, 2) == [
        (TEXT, False, False, b"he"),
        (PING, True, False, b"p"),
        (CONT, False, False, b"ll"),
        (PONG, True, False, b""),
        (CONT, True, False, b"o"),
    ]


@pytest.mark.parametrize(
    "data, code",
    [
        (mask_frame(3, b""), 1002),  # reserved opcode
        (mask_frame(0xB, b""), 1002),
        (mask_frame(TEXT, b"x", masked=False), 1002),  # clients must mask
        (mask_frame(TEXT, b"x", rsv=4), 1002),  # RSV1 without permessage-deflate
        (mask_frame(TEXT, b"x", rsv=2), 1002),
        (mask_frame(PING, b"x", fin=False), 1002),  # fragmented control frame
        (mask_frame(PING, b"x" * 126), 1002),  # control frame too long
        (mask_frame(CONT, b"x"), 1002),  # continuation with nothing to continue
        (
            mask_frame(TEXT, b"x", fin=False) + mask_frame(BINARY, b"y"),
            1002,
        ),  # expected continuation
        (mask_frame(CLOSE, b"\x03"), 1002),  # close payload of one byte
        (mask_frame(CLOSE, b"\x03\xed"), 1002),  # close code 1005 may not be sent
        (mask_frame(CLOSE, b"\x03\xe8\xff"), 1007),  # close reason not UTF-8
        (mask_frame(BINARY, b"x" * 201), 1009),
        (mask_frame(TEXT, b"x" * 120, fin=False) + mask_frame(CONT, b"x" * 81), 1009),
    ],
)
def test_errors_and_their_close_codes(data: bytes, code: int) -> None:
    for piece in (1, len(data)):
        events = feed_in_pieces(FrameParser(max_size=200), data, piece)
        assert events[-1] == ("error", code)


def test_too_big_fails_on_the_header_alone() -> None:
    head = mask_frame(BINARY, b"x" * 70000)[:10]  # no masking key, no payload yet
    assert FrameParser(max_size=1000).feed_data(head) == [("error", 1009)]


def test_payload_memory_follows_the_bytes_received_not_the_announced_length() -> None:
    announced = 16 << 20
    key = b"\x05\x06\x07\x08"
    head = bytes([0x82, 0xFF]) + announced.to_bytes(8, "big") + key
    payload = bytes(i % 253 for i in range(announced))
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload[: 1 << 20]))
    parser = FrameParser(max_size=-1)
    assert parser.feed_data(head + masked[:1024]) == []
    assert parser.held_capacity() <= 2048  # not 16 MiB
    received = 1024
    for end in (2024, 32_024, 532_024, len(masked)):
        assert parser.feed_data(masked[received:end]) == []
        received = end
        assert received <= parser.held_capacity() <= 2 * received
    # The rest of the frame in one read: capacity stops at the announced end.
    rest = bytes(b ^ key[i % 4] for i, b in enumerate(payload[received:], start=received))
    assert parser.feed_data(rest) == [(BINARY, True, False, payload)]
    assert parser.held_capacity() == 0  # taken: the buffer is given back


def test_a_fragmented_message_gathers_in_one_buffer() -> None:
    # A frame at a time for FrameParser, which takes each; the capacity stays that of one fragment.
    parser = FrameParser(max_size=-1)
    data = mask_frame(TEXT, b"a" * 100, fin=False)
    for _ in range(50):
        data += mask_frame(CONT, b"b" * 100, fin=False)
    events = feed_in_pieces(parser, data + mask_frame(CONT, b"c"), 7)
    assert [e[3] for e in events] == [b"a" * 100] + [b"b" * 100] * 50 + [b"c"]
    assert parser.held_capacity() == 0


def test_huge_length_does_not_overflow() -> None:
    head = bytes([0x82, 0xFF]) + b"\xff" * 8 + b"abcd"
    assert FrameParser(max_size=-1).feed_data(head) == [("error", 1009)]


def test_truncated_frames_wait_and_read_nothing_beyond() -> None:
    frame = mask_frame(BINARY, b"x" * 300)
    parser = FrameParser()
    for cut in range(len(frame)):
        assert FrameParser().feed_data(frame[:cut]) == []
    assert parser.feed_data(frame[:-1]) == []
    assert parser.feed_data(frame[-1:]) == [(BINARY, True, False, b"x" * 300)]


def test_input_after_close_is_ignored() -> None:
    data = mask_frame(CLOSE, b"\x03\xe8bye") + mask_frame(TEXT, b"late") + b"\xff\xff"
    assert FrameParser().feed_data(data) == [(CLOSE, True, False, b"\x03\xe8bye")]


def test_deflate_allows_rsv1_on_first_frame_only() -> None:
    parser = FrameParser(deflate=True)
    assert parser.feed_data(mask_frame(TEXT, b"x", rsv=4, fin=False)) == [
        (TEXT, False, True, b"x")
    ]
    assert parser.feed_data(mask_frame(CONT, b"y", rsv=4)) == [("error", 1002)]


@pytest.mark.parametrize("n", [0, 1, 125, 126, 65535, 65536, 100000])
def test_encode_frame_lengths(n: int) -> None:
    payload = b"z" * n
    frame = encode_frame(BINARY, payload)
    # Parse it back with websockets' own parser, client side (server frames are unmasked).
    from websockets.frames import Frame
    from websockets.streams import StreamReader

    reader = StreamReader()
    reader.feed_data(frame)
    parse = Frame.parse(reader.read_exact, mask=False, max_size=None)
    try:
        next(parse)
    except StopIteration as done:
        parsed = done.value
    assert parsed.data == payload and parsed.fin and parsed.opcode.value == BINARY


def test_encode_frame_flags() -> None:
    assert encode_frame(TEXT, b"hi", fin=False) == b"\x01\x02hi"
    assert encode_frame(TEXT, b"hi", rsv1=True) == b"\xc1\x02hi"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"ascii only, long enough for the eight-byte path",
        "żółw 🐢".encode(),
        "\U0010ffff".encode(),
        "\ud7ff\ue000".encode(),
    ],
)
def test_utf8_valid(data: bytes) -> None:
    assert utf8_valid(data)
    for cut in range(len(data)):
        assert utf8_valid(data[:cut], final=False)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff",
        b"\xc0\x80",
        b"\xe0\x80\x80",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        b"\xf5\x80\x80\x80",
        b"abc\x80",
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
    ],
)
def test_utf8_invalid(data: bytes) -> None:
    assert not utf8_valid(data)
    assert not utf8_valid(data, final=False)


def test_utf8_agrees_with_python_on_every_short_sequence() -> None:
    import itertools

    interesting = [
        0x00,
        0x41,
        0x7F,
        0x80,
        0x8F,
        0x90,
        0x9F,
        0xA0,
        0xBF,
        0xC0,
        0xC1,
        0xC2,
        0xDF,
        0xE0,
        0xE1,
        0xEC,
        0xED,
        0xEE,
        0xEF,
        0xF0,
        0xF1,
        0xF3,
        0xF4,
        0xF5,
        0xFF,
    ]
    for length in (1, 2, 3, 4):
        for combo in itertools.product(interesting, repeat=length):
            data = bytes(combo)
            try:
                data.decode("utf-8")
                expected = True
            except UnicodeDecodeError:
                expected = False
            assert utf8_valid(data) == expected, data
