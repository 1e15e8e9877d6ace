"""The docker exec stream read through the response's buffered reader (docker/docker-py#3332)."""

from __future__ import annotations

import io
import struct

from sqlrs.adapters.containers.docker import demultiplexed


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


def test_frames_already_buffered_with_the_headers_are_read() -> None:
    raw = io.BytesIO(b"HTTP/1.1 101 UPGRADED\r\n\r\n" + frame(1, b"3\n") + frame(2, b"NOTICE\n") + frame(1, b""))
    reader = io.BufferedReader(raw)
    assert reader.readline() == b"HTTP/1.1 101 UPGRADED\r\n" and reader.readline() == b"\r\n"
    assert raw.tell() == len(raw.getvalue())  # the whole stream sits in the reader's buffer, as it did for docker-py
    closed: list[bool] = []
    assert list(demultiplexed(reader, lambda: closed.append(True))) == [(b"3\n", None), (None, b"NOTICE\n")]
    assert closed == [True]


def test_a_stream_cut_mid_frame_yields_what_came_and_ends() -> None:
    data = frame(1, b"whole\n") + frame(1, b"cut short")[:-4]
    closed: list[bool] = []
    chunks = list(demultiplexed(io.BufferedReader(io.BytesIO(data)), lambda: closed.append(True)))
    assert chunks == [(b"whole\n", None), (b"cut s", None)] and closed == [True]
