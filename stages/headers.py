"""What image bytes are, read without decoding: a JPEG's or PNG's size, where a JPEG really ends,
and a guess at what undecodable bytes are. Byte parsing only, no OpenCV: the decoder's guards.
"""

from __future__ import annotations

import struct

SOI, EOI = b"\xff\xd8", b"\xff\xd9"  # a JPEG's start- and end-of-image markers


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG or PNG header without decoding; None for other formats."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return w, h
    if data[:2] != SOI:
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # TEM, RSTn, SOI: markers without a length
            i += 2
            continue
        seg_len = struct.unpack(">H", data[i + 2:i + 4])[0]
        # SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        if marker in (0xD9, 0xDA) or seg_len < 2:  # image end or scan before any frame: malformed
            return None
        i += 2 + seg_len
    return None


def jpeg_end(data: bytes) -> int | None:
    """Offset just past the end-of-image marker of the JPEG that `data` starts with; None if the
    data ends before it (a truncated file), len(data) if a segment length is bogus (the decoder
    then judges).

    Walks segments by their lengths and scans to their first real marker, so neither an EXIF
    thumbnail's markers nor what a phone appends after the image (a motion photo's MP4) count.
    """
    n = len(data)
    i = 2
    while True:
        i = data.find(b"\xff", i)  # libjpeg, too, skips stray bytes before a marker
        if i < 0 or i + 1 >= n:
            return None
        marker = data[i + 1]
        if marker == EOI[1]:
            return i + 2
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in (0x00, 0x01) or 0xD0 <= marker <= 0xD8:  # no length follows these
            i += 2
            continue
        if i + 4 > n:
            return None
        seg_len = struct.unpack_from(">H", data, i + 2)[0]
        if seg_len < 2:
            return n
        i += 2 + seg_len
        if marker == 0xDA:  # start of scan: its entropy-coded data follows the header
            i = _scan_end(data, i)
            if i is None:
                return None


def _scan_end(data: bytes, i: int) -> int | None:
    """Offset of the marker that ends the entropy-coded data from `i`, None if the data ends
    first. In that data 0xFF is followed by 0x00 (a stuffed byte) or a restart marker D0–D7;
    any other byte after it makes a marker. bytes.find (memchr) skips the rest at C speed."""
    n = len(data)
    while True:
        i = data.find(b"\xff", i)
        if i < 0 or i + 1 >= n:
            return None
        nxt = data[i + 1]
        if nxt != 0x00 and not 0xD0 <= nxt <= 0xD7:
            return i
        i += 2


TIFF = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # little-, big-endian; then BigTIFF
_MAGIC = {SOI: "JPEG", b"\x89PNG": "PNG", b"GIF8": "GIF", b"BM": "BMP", b"RIFF": "WebP",
          **dict.fromkeys(TIFF, "TIFF")}


def what_is(data: bytes) -> str:
    """A guess at what undecodable bytes are, for the skip report."""
    for magic, fmt in _MAGIC.items():
        if data.startswith(magic):
            return f"damaged {fmt} data"
    head = data[:256].lstrip(b"\xef\xbb\xbf \t\r\n").lower()  # a UTF-8 BOM, then whitespace
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<svg")):
        return "an HTML or XML page, not an image"
    return "not an image: no known image header"
