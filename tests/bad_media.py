"""Hostile media files for the bad-data tests (issue 10): written here, a few bytes each, nothing downloaded."""

from __future__ import annotations

import struct
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np

LONE_SURROGATE = "\udcff"  # what json.loads makes of the escape "\\udcff"


def write_spaced_mkv(path: str | Path, gap_s: float = 1e10, frames: int = 10, side: int = 32) -> Path:
    """A Matroska file (any suffix) of ``frames`` tiny MPEG-4 frames ``gap_s`` seconds apart, written with PyAV.

    With ``gap_s=1e10`` it declares a 9e10 s duration: decord sizes its frame index from that and aborts the
    process (``std::bad_alloc``); the file is under 2 KB.
    """
    import av

    enc = av.CodecContext.create("mpeg4", "w")
    enc.width, enc.height, enc.pix_fmt = side, side, "yuv420p"
    enc.time_base, enc.framerate = Fraction(1, 25), 25
    packets = []
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(np.full((side, side, 3), 20 * i, np.uint8), format="rgb24")
        frame.pts = i
        packets += enc.encode(frame)
    packets += enc.encode(None)
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = side, side, "yuv420p"
        stream.codec_context.extradata = enc.extradata
        stream.time_base = Fraction(1, 1000)
        for i, packet in enumerate(packets):  # the encoder's packets, re-stamped gap_s apart
            packet.stream, packet.time_base = stream, Fraction(1, 1000)
            packet.pts = packet.dts = int(round(i * gap_s * 1000))
            out.mux(packet)
    return Path(path)


def write_png_header(path: str | Path, width: int = 30000, height: int = 30000) -> Path:
    """A PNG of a few dozen bytes whose header declares ``width x height`` RGB pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
                           + chunk(b"IEND", b""))
    return Path(path)
