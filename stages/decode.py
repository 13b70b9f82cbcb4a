"""Decoding: the bytes of one image → uint8 RGB pixels at the stage's width.

Decoding is OpenCV's (it releases the GIL, so threads really run in parallel), straight to RGB,
because the ImageNet networks were trained on RGB and the original fed them BGR; DICOM's is
pydicom's (dicom.py). Images with more than 8 bits a sample (16-bit PNG and TIFF, float PFM and
Radiance HDR, DICOM) are mapped to 8 bits by the range of values they use or a DICOM window says
to show, not by a fixed shift: a 12-bit X-ray in a 16-bit file keeps its contrast. headers.py
reads image headers without decoding, limits.py says how many pixels an image may have, area.py
resizes.
"""

from __future__ import annotations

# Before cv2 loads: sets OpenCV's pixel limit (its guard against decompression bombs).
from stages import limits  # isort: skip

import struct
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import cv2
import numpy as np

from stages import dicom
from stages.area import resize_area
from stages.headers import EOI, SOI, TIFF, image_size, jpeg_end, what_is

if TYPE_CHECKING:  # images.py imports this module (BadImage): no import at run time
    from stages.images import Source


class BadImage(ValueError):
    """One file cannot be decoded into an image; the message is the reason."""


def decode_rgb(data: bytes, width: int, max_pixels: int = limits.DEFAULT_PIXELS,
               dicom_name: bool = False) -> np.ndarray:
    """Bytes of one image → uint8 (width, width, 3) RGB, resized with INTER_AREA.

    DICOM files (by their bytes, or `dicom_name`: a `.dcm` name) are read by stages/dicom.py,
    every other format by OpenCV. `max_pixels` is the stage's limit (stages/limits.py), checked
    in JPEG and PNG headers and DICOM's Rows × Columns before anything is decoded. More than 8
    bits a sample are mapped to 8 by to_uint8. Raises BadImage with the reason when the bytes
    are not a whole, sane image.
    """
    if not data:
        raise BadImage("empty file (0 bytes)")
    if dicom_name or dicom.is_dicom(data):
        try:
            frame = dicom.read(data, max_pixels, force=dicom_name)
        except dicom.Unreadable as e:
            raise BadImage(str(e)) from None
        img = to_uint8(frame.pixels, frame.span, frame.inverted)
    else:
        img = to_uint8(_opencv(data, max_pixels))
    out = resize_area(img, width)
    return out if out.ndim == 3 else cv2.cvtColor(out, cv2.COLOR_GRAY2RGB)


def load_rgb(source: Source, name: str, width: int, max_pixels: int = limits.DEFAULT_PIXELS
             ) -> np.ndarray:
    dicom_name = PurePosixPath(name).suffix.lower() in dicom.EXTS
    return decode_rgb(source.read(name), width, max_pixels, dicom_name)


def _opencv(data: bytes, max_pixels: int) -> np.ndarray:
    """RGB pixels as OpenCV decodes them: uint8, or uint16 or float32 where the file has more.

    IMREAD_COLOR_RGB (the pixels of IMREAD_COLOR then BGR → RGB, without that pass) turns
    grayscale, CMYK, palette and alpha images into 3-channel ones and applies the EXIF
    orientation (the photo as a viewer shows it); alpha is dropped. IMREAD_ANYDEPTH keeps 16-bit
    and float samples (without it OpenCV divides 16-bit ones by 256, and casts float ones in
    [0, 1] to 0 or 1); 8-bit images decode as without it, byte for byte and as fast. A TIFF
    that this decode refuses (int32 or float, gray or with alpha) is read as stored instead.
    """
    size = image_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise BadImage(limits.refusal(*size, max_pixels))
    end = len(data)
    # libjpeg decodes a truncated file with a grey lower part and only a warning: a JPEG must
    # reach its end-of-image marker. Most files end with it; a motion photo has a video after it.
    if data[:2] == SOI and not data.endswith(EOI):
        found = jpeg_end(data)
        if found is None:
            raise BadImage("truncated JPEG (the data ends before its end-of-image marker)")
        end = found
    buf = np.frombuffer(data, np.uint8, count=end)
    tiff = data[:4] in TIFF
    try:
        # OpenCV's colour decode of 32- and 64-bit TIFF samples (int32, float) takes three
        # channels only: gray and alpha ones fail as damaged, with an error line on stderr per
        # file. Those the header announces are read as stored at once, the others where the
        # colour decode fails; made RGB here. The TIFF decoder applies the orientation tag in
        # either mode.
        if tiff and _colour_refused(data):
            img = _rgb(cv2.imdecode(buf, cv2.IMREAD_UNCHANGED))
        else:
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR_RGB | cv2.IMREAD_ANYDEPTH)
            if img is None and tiff:
                img = _rgb(cv2.imdecode(buf, cv2.IMREAD_UNCHANGED))
    except cv2.error as e:
        reason = str(e).strip().splitlines()[-1]
        if "CV_IO_MAX_IMAGE_PIXELS" in reason:
            reason += (f" (OpenCV's pixel limit, read from {limits.ENV} when it loads: set it "
                       "higher to decode this image)")
        raise BadImage(f"refused by the decoder: {reason}") from None
    if img is None or img.size == 0:
        raise BadImage(f"cannot be decoded ({what_is(data)})")
    return img


def _colour_refused(data: bytes) -> bool:
    """Whether OpenCV's colour decode refuses this TIFF: its first image has 32- or 64-bit
    samples, not three a pixel (grfmt_tiff.cpp asserts that). False where the header cannot
    say: the colour decode is tried, as before."""
    layout = tiff_layout(data)
    return layout is not None and layout[0] in (32, 64) and layout[1] != 3


# TIFF 6.0 tags (SHORT values): BitsPerSample, one a sample (the first is enough here), and
# SamplesPerPixel; a TIFF without them has 1 of each.
_BITS, _SAMPLES = 258, 277
_SHORT = 3


def tiff_layout(data: bytes) -> tuple[int, int] | None:
    """(bits a sample, samples a pixel) of the first image of a TIFF or BigTIFF, read from its
    first directory; None where that is not there or not as TIFF 6.0 writes it."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None:
        return None
    try:
        (magic,) = struct.unpack_from(order + "H", data, 2)
        if magic == 42:
            (ifd,) = struct.unpack_from(order + "I", data, 4)
            count, entry, pointer = "H", "HHI4s", "I"
        elif magic == 43:  # BigTIFF
            (ifd,) = struct.unpack_from(order + "Q", data, 8)
            count, entry, pointer = "Q", "HHQ8s", "Q"
        else:
            return None
        (n,) = struct.unpack_from(order + count, data, ifd)
        start, size = ifd + struct.calcsize(count), struct.calcsize(order + entry)
        found = {_BITS: 1, _SAMPLES: 1}
        for i in range(min(n, 4096)):  # 4096: a bound against a damaged count
            tag, kind, values, field = struct.unpack_from(order + entry, data, start + i * size)
            if tag not in found:
                continue
            if kind != _SHORT or values < 1:
                return None
            if 2 * values > len(field):  # too many to fit: the field is their offset
                (at,) = struct.unpack_from(order + pointer, field)
                (found[tag],) = struct.unpack_from(order + "H", data, at)
            else:
                (found[tag],) = struct.unpack_from(order + "H", field)
    except struct.error:  # the directory lies beyond the data: damaged
        return None
    return found[_BITS], found[_SAMPLES]


def _rgb(img: np.ndarray | None) -> np.ndarray | None:
    """OpenCV's pixels as stored (gray, gray and alpha, BGR or BGRA) as gray or RGB, alpha
    dropped; decode_rgb makes gray RGB after resizing, a third of the work."""
    if img is None or img.ndim == 2:
        return img
    return np.ascontiguousarray(img[..., 0] if img.shape[2] < 3 else img[..., 2::-1])


def to_uint8(img: np.ndarray, span: tuple[float, float] | None = None, inverted: bool = False
             ) -> np.ndarray:
    """`img` as uint8: the values `span` = (black, white) become 0 and 255, linearly, rounded
    half to even and saturated; without a span, the image's own range (own_range); `inverted`
    swaps black and white. One pass, no float copy of the image; 8-bit images as they are."""
    if img.dtype.kind == "f":
        img = _finite(img)
    black, white = span or own_range(img)
    if inverted:
        black, white = white, black
    if img.dtype == np.uint8 and (black, white) == (0, 255):
        return img
    if img.dtype not in _OPENCV_DEPTHS:  # e.g. uint32: OpenCV has no such type
        img = img.astype(np.float64)
    scale = 255.0 / (white - black)
    # saturate(img × scale + img × 0 + offset): OpenCV's one-pass scaled conversion to uint8.
    return cv2.addWeighted(img, scale, img, 0.0, -black * scale, dtype=cv2.CV_8U)


def own_range(img: np.ndarray) -> tuple[float, float]:
    """The values an image shows as black and white. 8-bit images: 0 and 255, as stored. More
    bits: its own least and greatest values, over all channels (one range, so colours keep
    their balance); float data within [0, 1] keep that scale (PFM, most float TIFF). An image
    of one value keeps its place in its type's range (a blank 16-bit one stays as dark)."""
    if img.dtype == np.uint8:
        return 0.0, 255.0
    lo, hi = float(img.min()), float(img.max())
    if img.dtype.kind == "f":
        return (lo, hi) if (lo < 0.0 or hi > 1.0) and lo < hi else (0.0, 1.0)
    if lo < hi:
        return lo, hi
    info = np.iinfo(img.dtype)
    return float(info.min), float(info.max)


def _finite(img: np.ndarray) -> np.ndarray:
    """Float pixels with ±inf clipped to the finite range and NaN as its least value, in place
    (the decoder's array is ours): a sun in a Radiance file comes out white, not black."""
    if np.isfinite(img.min()) and np.isfinite(img.max()):  # NaN and ±inf show here: no mask
        return img
    values = img[np.isfinite(img)]
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    np.clip(img, lo, hi, out=img)
    img[np.isnan(img)] = lo
    return img


_OPENCV_DEPTHS = {np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.int32,
                                        np.float32, np.float64)}
