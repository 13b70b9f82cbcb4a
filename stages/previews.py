"""Small JPEG previews of a split's images, stored in its fused.h5 by `concat`.

They are what the head's picture of its worst mistakes shows, so `train_head` needs the training
fused.h5 alone: a teammate who pulled only that file still gets the picture. At ~4 KB an image
they add about 100 MB to the Kaggle training set's 400 MB of fused features.
"""

from __future__ import annotations

import cv2
import h5py
import numpy as np

from stages import h5io

SIDE = 112  # px: enough to tell what a photo shows
QUALITY = 85
BATCH = 256  # images read from train.h5 at a time (at 299 px: 69 MB)


def encode(rgb: np.ndarray) -> np.ndarray:
    """One RGB image → the bytes of a SIDE-px JPEG, as uint8."""
    small = cv2.resize(rgb, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
    assert ok
    return buf.reshape(-1)


def decode(data: np.ndarray) -> np.ndarray:
    """The bytes of a preview → RGB pixels."""
    return cv2.cvtColor(cv2.imdecode(np.asarray(data, np.uint8), cv2.IMREAD_COLOR),
                        cv2.COLOR_BGR2RGB)


def write(f: h5py.File, images: h5py.Dataset) -> None:
    """`previews` in `f`: one JPEG (variable-length bytes) per row of `images`, in row order."""
    rows = h5io.Appender(f, "previews", (), h5py.vlen_dtype(np.uint8))
    for batch in h5io.iter_batches(images, BATCH):
        rows.append([encode(img) for img in batch])


def read(f: h5py.File, rows: np.ndarray) -> np.ndarray:
    """The previews of `rows` (any order), decoded: (len(rows), SIDE, SIDE, 3) uint8 RGB."""
    return np.stack([decode(f["previews"][int(r)]) for r in rows]) if len(rows) else \
        np.zeros((0, SIDE, SIDE, 3), np.uint8)
