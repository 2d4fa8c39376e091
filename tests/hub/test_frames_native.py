"""``ServerFrame``: one message's frame, built once for every native member (compiled only).

Checked against ``websockets``' own frame serializer, for every length
encoding (7-bit, 16-bit, 64-bit) and both opcodes, and for what it refuses.
"""

from __future__ import annotations

import pytest

frames_c = pytest.importorskip("turbows._frames_c", reason="the compiled extension is not built")

from websockets.frames import Frame, Opcode  # noqa: E402

ServerFrame = frames_c.ServerFrame


def websockets_frame(opcode: Opcode, data: bytes) -> bytes:
    return Frame(opcode, data).serialize(mask=False)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_and_binary_frames_are_websockets_frames(size: int) -> None:
    text = "é" * (size // 2) + "x" * (size % 2)
    built = ServerFrame(text)
    assert built.data == websockets_frame(Opcode.TEXT, text.encode())
    assert (built.opcode, built.size, built.payload) == (0x1, len(text.encode()), text)
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    built = ServerFrame(data)
    assert built.data == websockets_frame(Opcode.BINARY, data)
    assert (built.opcode, built.size) == (0x2, size)


@pytest.mark.parametrize("payload", [None, 1, bytearray(b"x"), memoryview(b"x"), ["x"]])
def test_only_str_and_bytes(payload: object) -> None:
    with pytest.raises(TypeError, match="str or bytes"):
        ServerFrame(payload)


def test_subclasses_are_refused() -> None:
    class Text(str):
        pass

    with pytest.raises(TypeError):
        ServerFrame(Text("x"))


def test_a_lone_surrogate_is_refused_as_sending_it_would_be() -> None:
    with pytest.raises(UnicodeEncodeError):
        ServerFrame("\ud800")


def test_no_arguments_and_read_only() -> None:
    with pytest.raises(TypeError):
        ServerFrame()  # type: ignore[call-arg]
    built = ServerFrame("x")
    with pytest.raises(AttributeError):
        built.data = b""  # type: ignore[misc]
    assert repr(built) == "<turbows ServerFrame text, 1 bytes>"
