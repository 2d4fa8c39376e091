"""Differential fuzzing: turbows' frame reader against websockets' parser.

websockets' server-side ``ServerProtocol`` (state OPEN), fed the same bytes
split at other random points, must yield the same frames and fail with the
same close code. One deliberate difference: turbows fails as soon as a
frame's header is in (reserved bits, control-frame rules, sequencing), where
websockets first waits for the frame's payload; so where turbows failed and
websockets is still waiting mid-frame, websockets is given zero bytes to
complete the frame and must then fail the same way. And one deliberate
difference in outcome: a close frame inside a fragmented message closes
normally here (Autobahn case 7.1.5), where websockets fails with 1002.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from turbows._frames_c import FrameParser
from websockets.frames import Frame
from websockets.protocol import State
from websockets.server import ServerProtocol
from wsframes import mask_frame

MAX_SIZE = 256


def turbows_events(chunks: list[bytes]) -> tuple[list, int | None]:
    parser = FrameParser(max_size=MAX_SIZE)
    frames: list = []
    for chunk in chunks:
        for event in parser.feed_data(chunk):
            if event[0] == "error":
                return frames, event[1]
            frames.append(event)
    return frames, None


def websockets_events(chunks: list[bytes]) -> tuple[list, int | None]:
    protocol = ServerProtocol(state=State.OPEN, max_size=MAX_SIZE)
    frames: list = []
    for chunk in chunks:
        protocol.receive_data(chunk)
        for event in protocol.events_received():
            assert isinstance(event, Frame)
            frames.append(
                (event.opcode.value, event.fin, event.rsv1, bytes(event.data))
            )
        if protocol.parser_exc is not None:
            if str(protocol.parser_exc) == "incomplete fragmented message":
                # The one deliberate difference: a valid close inside a fragmented message
                # is a normal close for turbows (Autobahn 7.1.5), a 1002 for websockets.
                close = protocol.close_rcvd
                payload = (
                    b""
                    if close.code == 1005
                    else close.code.to_bytes(2, "big") + close.reason.encode()
                )
                frames.append((8, True, False, payload))
                return frames, None
            return frames, protocol.close_sent.code
    return frames, None


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in points:
        pieces.append(data[last:point])
        last = point
    pieces.append(data[last:])
    return [p for p in pieces if p]


def check(data: bytes, cuts_a: list[int], cuts_b: list[int]) -> None:
    frames, code = turbows_events(split(data, cuts_a))
    ws_frames, ws_code = websockets_events(split(data, cuts_b))
    if code is not None and ws_code is None:
        # turbows failed on a header whose frame websockets still waits for: complete it.
        ws_frames, ws_code = websockets_events(
            split(data, cuts_b) + [bytes(MAX_SIZE + 14)]
        )
    assert (frames, code) == (ws_frames, ws_code)


# A frame: opcode (including reserved ones), flags, payload, masked or not, sometimes too long.
opcodes = st.sampled_from([0, 1, 2, 8, 9, 10, 3, 0xB])
frame = st.builds(
    lambda opcode, fin, rsv, payload, masked: mask_frame(
        opcode, payload, fin=fin, rsv=rsv, masked=masked
    ),
    opcodes,
    st.booleans() | st.just(True),
    st.sampled_from([0, 0, 0, 0, 4, 2, 1]),
    st.binary(max_size=300)
    | st.sampled_from(
        [
            b"",
            b"\x03\xe8",
            b"\x03\xe8bye",
            b"\x03",
            b"\x03\xed",
            b"\x0b\xb8\xff",
            b"\x13\x88",
        ]
    ),
    st.booleans() | st.just(True) | st.just(True),
)
streams = st.lists(frame, min_size=1, max_size=8).map(b"".join)
cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=6)


@settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(streams, cuts, cuts)
def test_frame_streams(data: bytes, cuts_a: list[int], cuts_b: list[int]) -> None:
    check(data, cuts_a, cuts_b)


@settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    streams,
    st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4
    ),
    cuts,
    cuts,
)
def test_mutated_streams(
    data: bytes, mutations: list[tuple[int, int]], cuts_a: list[int], cuts_b: list[int]
) -> None:
    mutable = bytearray(data)
    for where, value in mutations:
        mutable[where % len(mutable)] = value
    check(bytes(mutable), cuts_a, cuts_b)


@settings(max_examples=1000, deadline=None)
@given(st.binary(min_size=1, max_size=400), cuts, cuts)
def test_random_bytes(data: bytes, cuts_a: list[int], cuts_b: list[int]) -> None:
    check(data, cuts_a, cuts_b)


def test_a_sample_of_random_bytes_with_os_urandom() -> None:
    for _ in range(300):
        data = os.urandom(64)
        check(data, [7, 30], [1, 50])
