"""Decoding: the bytes of one image → uint8 RGB pixels at the stage's width.

Decoding is OpenCV's (it releases the GIL, so threads really run in parallel), straight to RGB,
because the ImageNet networks were trained on RGB and the original fed them BGR. headers.py reads
image headers without decoding, limits.py says how many pixels an image may have, area.py resizes.
"""

from __future__ import annotations

# Before cv2 loads: sets OpenCV's pixel limit (its guard against decompression bombs).
from stages import limits  # isort: skip

from typing import TYPE_CHECKING

import cv2
import numpy as np

from stages.area import resize_area
from stages.headers import EOI, SOI, image_size, jpeg_end, what_is

if TYPE_CHECKING:  # images.py imports this module (BadImage): no import at run time
    from stages.images import Source


class BadImage(ValueError):
    """One file cannot be decoded into an image; the message is the reason."""


def decode_rgb(data: bytes, width: int, max_pixels: int = limits.DEFAULT_PIXELS) -> np.ndarray:
    """Bytes of one image → uint8 (width, width, 3) RGB, resized with INTER_AREA.

    OpenCV's IMREAD_COLOR_RGB (the pixels of IMREAD_COLOR then BGR → RGB, without that pass)
    turns grayscale, CMYK, 16-bit and alpha images into 8-bit 3-channel ones and applies the
    EXIF orientation (the photo as a viewer shows it); alpha is dropped. `max_pixels` is the
    stage's limit (stages/limits.py), checked in JPEG and PNG headers before anything is decoded.
    Raises BadImage with the reason when the bytes are not a whole, sane image.
    """
    if not data:
        raise BadImage("empty file (0 bytes)")
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
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8, count=end), cv2.IMREAD_COLOR_RGB)
    except cv2.error as e:
        reason = str(e).strip().splitlines()[-1]
        if "CV_IO_MAX_IMAGE_PIXELS" in reason:
            reason += (f" (OpenCV's pixel limit, read from {limits.ENV} when it loads: set it "
                       "higher to decode this image)")
        raise BadImage(f"refused by the decoder: {reason}") from None
    if img is None or img.size == 0:
        raise BadImage(f"cannot be decoded ({what_is(data)})")
    return resize_area(img, width)


def load_rgb(source: Source, name: str, width: int, max_pixels: int = limits.DEFAULT_PIXELS
             ) -> np.ndarray:
    return decode_rgb(source.read(name), width, max_pixels)
