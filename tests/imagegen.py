"""Real image files written at test time: Kaggle-named JPEGs, class folders, a test set, DICOM.

Cats are reddish and dogs bluish, with noise, so a head trained on random-init features still
has something to learn; `cat.0.jpg` is pure red, the known colour for the RGB-order check.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # pydicom is imported by the DICOM writers only
    from pydicom.dataset import Dataset

RED_RGB = (255, 0, 0)


# BGR base colours by label: reddish, bluish, greenish, yellowish, then around again.
PALETTE = ((40, 60, 200), (200, 60, 40), (60, 190, 50), (40, 200, 210))


def image(rng: np.random.Generator, label: int, w: int = 96, h: int = 80) -> np.ndarray:
    """A BGR image for cv2.imwrite: reddish for label 0, bluish for label 1 (PALETTE)."""
    base = np.array(PALETTE[label % len(PALETTE)], np.float32)
    img = base + rng.normal(0, 25, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def write(path: Path, bgr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix or ".jpg", bgr)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def kaggle_train(root: Path, per_class: int, seed: int = 0, w: int = 96, h: int = 80) -> Path:
    """`cat.N.jpg` and `dog.N.jpg`; cat.0 is pure red (RGB 255, 0, 0)."""
    rng = np.random.default_rng(seed)
    for label, cls in enumerate(("cat", "dog")):
        for i in range(per_class):
            img = image(rng, label, w, h)
            if label == 0 and i == 0:
                img[:] = RED_RGB[::-1]
            write(root / f"{cls}.{i}.jpg", img)
    return root


def class_folders(root: Path, classes: tuple[str, ...], per_class: int, seed: int = 0) -> Path:
    """`<class>/<i>.jpg`, each class in its own colour (PALETTE, in the order given)."""
    rng = np.random.default_rng(seed)
    for label, cls in enumerate(classes):
        for i in range(per_class):
            write(root / cls / f"{i}.jpg", image(rng, label))
    return root


def test_set(root: Path, n: int, seed: int = 1, w: int = 96, h: int = 80) -> Path:
    """`<id>.jpg` for ids 1..n (Kaggle's numbering)."""
    rng = np.random.default_rng(seed)
    for i in range(1, n + 1):
        write(root / f"{i}.jpg", image(rng, i % 2, w, h))
    return root


def gradient_jpeg(w: int, h: int) -> bytes:
    """A smooth w×h JPEG (red across, green down): a 108 MP one is ~2.6 MB, encoded in ~0.3 s."""
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = 128
    img[..., 1] = np.linspace(0, 255, h, dtype=np.float32).astype(np.uint8)[:, None]
    img[..., 2] = np.linspace(0, 255, w, dtype=np.float32).astype(np.uint8)[None, :]
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


def motion_photo(jpeg: bytes, seed: int = 0) -> bytes:
    """A phone's motion photo: the JPEG, then a short MP4 (`ftyp` and `mdat` boxes) whose video
    data holds a JPEG start-of-scan marker after its last end-of-image one, as about half of
    random data does."""
    rng = np.random.default_rng(seed)
    video = (rng.bytes(4000) + b"\xff\xda" + rng.bytes(4000)).replace(b"\xff\xd9", b"\xff\xd8")
    ftyp = struct.pack(">I4s4sI4s", 20, b"ftyp", b"mp42", 0, b"isom")
    return jpeg + ftyp + struct.pack(">I4s", 8 + len(video), b"mdat") + video


def dicom(pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int | None = None,
          syntax: str = "", **tags: object) -> bytes:
    """A DICOM file (a CT image's SOP class) holding `pixels` (uint8/uint16/int16: (rows, cols)
    grayscale, (rows, cols, 3) colour, a leading axis for frames), with `tags` set (e.g.
    RescaleSlope=2); `syntax`: a transfer syntax UID that pydicom can compress to (RLE Lossless,
    JPEG 2000 with pylibjpeg-openjpeg), uncompressed if empty."""
    ds = _dataset(pixels, photometric, bits_stored or pixels.dtype.itemsize * 8, tags)
    if syntax:
        ds.compress(syntax, generate_instance_uid=False)
    return _file(ds)


def encapsulated_dicom(codestream: bytes, syntax: str, rows: int, cols: int,
                       photometric: str = "MONOCHROME2") -> bytes:
    """A DICOM file holding one grayscale frame already compressed as `syntax` (e.g. a JPEG from
    OpenCV as JPEG Baseline), which pydicom cannot compress to itself."""
    from pydicom.encaps import encapsulate

    ds = _dataset(np.zeros((rows, cols), np.uint8), photometric, 8, {})
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([codestream])
    ds["PixelData"].VR = "OB"
    return _file(ds)


def _dataset(pixels: np.ndarray, photometric: str, bits_stored: int, tags: dict[str, object]
             ) -> Dataset:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
    ds.Modality = "CT"
    ds.set_pixel_data(pixels, photometric, bits_stored)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def _file(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)  # the 128-byte preamble, `DICM`, the file meta
    return out.getvalue()
