"""Finding, naming and decoding images: folders or zips, Kaggle names or class folders.

Everything that turns a file into pixels lives here, once: the resize stage only orders the work.
Decoding is OpenCV's (it releases the GIL, so threads really run in parallel), straight to RGB,
because the ImageNet networks were trained on RGB and the original fed them BGR.
"""

from __future__ import annotations

import os

# OpenCV's own guard against decompression bombs, the backstop for formats whose header we do not
# parse (ours, in decode_rgb, covers JPEG and PNG with a clearer message). OpenCV reads it once,
# when cv2 is loaded, so it only holds where this module is imported before anything imports cv2
# (as in the stage); elsewhere OpenCV's default of 2**30 pixels applies.
MAX_PIXELS = 64_000_000  # e.g. 8000×8000: ~190 MB decoded; the Kaggle photos are ~0.2 MP
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))

import re  # noqa: E402
import struct  # noqa: E402
import threading  # noqa: E402
import zipfile  # noqa: E402
import zlib  # noqa: E402
from collections import Counter, deque  # noqa: E402
from collections.abc import Callable, Iterable, Iterator, Sequence  # noqa: E402
from concurrent.futures import Future, ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path, PurePosixPath  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from stages.area import resize_area  # noqa: E402

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
KAGGLE_CLASSES = ("cat", "dog")  # label 0, 1
DATA_HELP = (
    "Put the Kaggle 'Dogs vs. Cats Redux' data there: `kaggle competitions download -c "
    "dogs-vs-cats-redux-kernels-edition -p data/raw` then unzip train.zip and test.zip into "
    "data/raw (or point params `train_data`/`test_data` at the .zip files). See README.md, 'Data'."
)
_KAGGLE_TRAIN = re.compile(r"^(cat|dog)\.(\d+)\.[^.]+$", re.IGNORECASE)
_TEST_ID = re.compile(r"^(\d{1,18})\.[^.]+$")  # 18 digits: every id fits the int64 `ids`


class DataError(ValueError):
    """The input data cannot make a correct output; the message names the files and the fix."""


class BadImage(ValueError):
    """One file cannot be decoded into an image; the message is the reason."""


def _natural_key(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


# --- sources: a folder or a zip, read in place ------------------------------------------------


class Source:
    """A folder or a .zip of images, read in place (a zip is never unpacked to disk)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"{self.path}: does not exist. {DATA_HELP}")
        self.is_zip = self.path.is_file()
        if self.is_zip and not zipfile.is_zipfile(self.path):
            raise DataError(f"{self.path}: is a file but not a .zip; give a folder or a .zip")
        self._local = threading.local()

    def _zip(self) -> zipfile.ZipFile:
        # One handle per thread: reads through one shared handle would serialise on its lock.
        zf = getattr(self._local, "zf", None)
        if zf is None:
            zf = self._local.zf = zipfile.ZipFile(self.path)
        return zf

    def names(self) -> list[str]:
        """Every file, as a POSIX path relative to the source root."""
        if not self.is_zip:
            root = self.path
            return [
                (Path(d) / f).relative_to(root).as_posix()
                for d, _, files in os.walk(root) for f in files
            ]
        names = [i.filename for i in self._zip().infolist() if not i.is_dir()]
        # A zip may hold one name twice; only the last copy is readable by name, so the first
        # would silently become a second copy of it.
        dups = sorted(n for n, count in Counter(names).items() if count > 1)
        if dups:
            raise DataError(f"{self.path}: holds these names more than once: {_some(dups)}. "
                            "Rebuild the zip with one member per name.")
        return names

    def read(self, name: str) -> bytes:
        if not self.is_zip:
            return (self.path / name).read_bytes()
        try:
            return self._zip().read(name)
        except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as e:
            # A damaged, encrypted or oddly compressed member is one bad file, not a crash.
            raise BadImage(f"cannot be read from the zip: {e}") from None


def is_ignored(name: str) -> bool:
    """Hidden files, macOS/Windows litter and non-image extensions: skipped and counted."""
    parts = PurePosixPath(name).parts
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return True
    return PurePosixPath(name).suffix.lower() not in IMAGE_EXTS


def strip_common_top(names: Sequence[str]) -> tuple[str, list[str]]:
    """Drop leading folders shared by every file (`train/cat.0.jpg` → `cat.0.jpg`).

    Stops where the class folders begin (`PetImages/Cat/1.jpg` keeps `Cat/1.jpg`); a lone class
    folder (`Cat/1.jpg`) is kept too, so the error says "one class", not "bad names".
    Returns the stripped prefix and the relative names, in the input order.
    """
    prefix = ""
    rel = list(names)
    while rel and all("/" in n for n in rel) and len({n.split("/", 1)[0] for n in rel}) == 1:
        stripped = [n.split("/", 1)[1] for n in rel]
        flat = all("/" not in s for s in stripped)
        if flat and not any(parse_kaggle_label(s) for s in stripped):
            break
        prefix += rel[0].split("/", 1)[0] + "/"
        rel = stripped
    return prefix, rel


# --- labels and ids ---------------------------------------------------------------------------


@dataclass
class Listing:
    """What a source holds: the files to decode, in output order, and what was set aside."""

    files: list[str]                   # names as read from the source, in output order
    labels: list[int] = field(default_factory=list)   # train only
    ids: list[int] = field(default_factory=list)      # test only
    classes: list[str] = field(default_factory=list)  # train only, index = label
    ignored: list[str] = field(default_factory=list)  # non-image files, not an error
    prefix: str = ""  # folders every file shares (`train/` in Kaggle's zip), not part of `names`

    @property
    def names(self) -> list[str]:
        """The files without `prefix`, as train.h5 stores them: a folder and its zip agree."""
        return [f[len(self.prefix):] for f in self.files]


def parse_kaggle_label(name: str) -> tuple[int, int] | None:
    """`cat.12.jpg` → (0, 12), `dog.7.JPG` → (1, 7); None if the name does not parse."""
    m = _KAGGLE_TRAIN.match(PurePosixPath(name).name)
    if not m:
        return None
    return KAGGLE_CLASSES.index(m.group(1).lower()), int(m.group(2))


def parse_test_id(name: str) -> int | None:
    """`123.jpg` → 123; None if the name is not a number."""
    m = _TEST_ID.match(PurePosixPath(name).name)
    return int(m.group(1)) if m else None


def list_train(source: Source) -> Listing:
    """Kaggle names (`cat.N.jpg`, `dog.N.jpg`) or one subfolder per class, sorted by label then
    number; classes of a folder layout are the sorted folder names (label = index)."""
    ignored, images = _images(source)
    prefix, rel = strip_common_top(images)
    depths = {r.count("/") for r in rel}
    if depths == {0}:
        parsed = [(parse_kaggle_label(r), prefix + r) for r in rel]
        bad = sorted(n for p, n in parsed if p is None)
        if bad:
            raise DataError(
                f"{source.path}: {len(bad)} image name(s) are not Kaggle names `cat.N.jpg` or "
                f"`dog.N.jpg`: {_some(bad)}. Rename or remove them, or use one subfolder per class."
            )
        order = sorted(parsed, key=lambda t: (t[0][0], t[0][1], _natural_key(t[1])))  # type: ignore[index]
        classes = list(KAGGLE_CLASSES)
        files = [n for _, n in order]
        labels = [p[0] for p, _ in order]  # type: ignore[index]
    elif 0 not in depths:
        classes = sorted({r.split("/", 1)[0] for r in rel})
        files, labels = _by_class(rel, prefix, classes)
    else:
        raise _mixed_layout(source, prefix, rel)
    if len(set(labels)) < 2:
        raise DataError(f"{source.path}: only one class ({classes[labels[0]]}); need at least two")
    return Listing(files=files, labels=labels, classes=classes, ignored=sorted(ignored),
                   prefix=prefix)


def list_test(source: Source, classes: Sequence[str] = KAGGLE_CLASSES) -> Listing:
    """Unlabelled test images named `<id>.<ext>` (Kaggle), sorted by id; or a labelled test set,
    one subfolder per class, each one of the training `classes` (labels are their indices),
    sorted like the training images. Duplicate ids, other names and unknown classes are errors."""
    ignored, images = _images(source)
    # Drop top folders every file shares (`test/` in Kaggle's zip), but not a class folder: a
    # labelled test set may hold a single class.
    prefix, rel = "", images
    while all("/" in r for r in rel) and len({r.split("/", 1)[0] for r in rel}) == 1 \
            and rel[0].split("/", 1)[0] not in classes:
        prefix += rel[0].split("/", 1)[0] + "/"
        rel = [r.split("/", 1)[1] for r in rel]
    if all("/" in r for r in rel):
        unknown = sorted({r.split("/", 1)[0] for r in rel} - set(classes))
        if unknown:
            raise DataError(
                f"{source.path}: test folder(s) {_some(unknown)} are not training classes "
                f"({', '.join(classes)}); a labelled test set holds one subfolder per training "
                "class. Rename or remove them.")
        files, labels = _by_class(rel, prefix, list(classes))
        return Listing(files=files, labels=labels, ids=list(range(len(files))),
                       classes=list(classes), ignored=sorted(ignored), prefix=prefix)
    if any("/" in r and r.split("/", 1)[0] in classes for r in rel):
        raise _mixed_layout(source, prefix, rel)  # class folders beside loose images
    pairs = [(parse_test_id(n), n) for n in images]
    bad = sorted(n for i, n in pairs if i is None)
    if bad:
        raise DataError(
            f"{source.path}: {len(bad)} test image name(s) are not `<id>.jpg`: {_some(bad)}. "
            "The submission needs a numeric id per image; a labelled test set holds one "
            "subfolder per training class."
        )
    pairs.sort(key=lambda t: (t[0], t[1]))
    seen: dict[int, list[str]] = {}
    for i, n in pairs:
        seen.setdefault(i, []).append(n)  # type: ignore[arg-type]
    dups = [f"{i}: {', '.join(ns)}" for i, ns in seen.items() if len(ns) > 1]
    if dups:
        raise DataError(f"{source.path}: duplicate test ids: {_some(dups)}. Keep one file per id.")
    return Listing(files=[n for _, n in pairs], ids=[i for i, _ in pairs],  # type: ignore[misc]
                   ignored=sorted(ignored))


def _images(source: Source) -> tuple[list[str], list[str]]:
    """(ignored files, image files) of a source; no images at all is an error."""
    all_names = source.names()
    ignored = [n for n in all_names if is_ignored(n)]
    images = [n for n in all_names if not is_ignored(n)]
    if not images:
        raise DataError(f"{source.path}: holds no images ({len(ignored)} other files). {DATA_HELP}")
    return ignored, images


def _by_class(rel: Sequence[str], prefix: str, classes: list[str]) -> tuple[list[str], list[int]]:
    """Files under class folders (`Cat/1.jpg`), sorted by label then natural name; labels are
    the indices of their folders in `classes`."""
    keyed = sorted((classes.index(r.split("/", 1)[0]), _natural_key(r), prefix + r) for r in rel)
    return [n for _, _, n in keyed], [c for c, _, _ in keyed]


def _mixed_layout(source: Source, prefix: str, rel: Sequence[str]) -> DataError:
    loose = sorted(prefix + r for r in rel if "/" not in r)
    return DataError(
        f"{source.path}: mixes images at the top level with class subfolders; loose images: "
        f"{_some(loose)}. Use either Kaggle names in one folder or one subfolder per class."
    )


def _some(items: Sequence[str], n: int = 20) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" … and {len(items) - n} more" if len(items) > n else "")


# --- decoding ---------------------------------------------------------------------------------


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG or PNG header without decoding; None for other formats."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return w, h
    if data[:2] != b"\xff\xd8":
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


def _jpeg_truncated(data: bytes) -> bool:
    # libjpeg decodes a truncated file with a grey lower part and only a warning; the end-of-image
    # marker after the last start-of-scan is the reliable sign that the file is complete.
    if data.endswith(b"\xff\xd9"):  # the usual case, found without a search (2% of decode time)
        return False
    sos = data.rfind(b"\xff\xda")
    return sos == -1 or data.find(b"\xff\xd9", sos) == -1


_MAGIC = {b"\xff\xd8": "JPEG", b"\x89PNG": "PNG", b"GIF8": "GIF", b"BM": "BMP", b"RIFF": "WebP",
          b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


def _what_is(data: bytes) -> str:
    """A guess at what undecodable bytes are, for the skip report."""
    for magic, fmt in _MAGIC.items():
        if data.startswith(magic):
            return f"damaged {fmt} data"
    head = data[:256].lstrip(b"\xef\xbb\xbf \t\r\n").lower()  # a UTF-8 BOM, then whitespace
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<svg")):
        return "an HTML or XML page, not an image"
    return "not an image: no known image header"


def decode_rgb(data: bytes, width: int) -> np.ndarray:
    """Bytes of one image → uint8 (width, width, 3) RGB, resized with INTER_AREA.

    OpenCV's IMREAD_COLOR_RGB (the pixels of IMREAD_COLOR then BGR → RGB, without that pass)
    turns grayscale, CMYK, 16-bit and alpha images into 8-bit 3-channel ones and applies the
    EXIF orientation (the photo as a viewer shows it); alpha is dropped.
    Raises BadImage with the reason when the bytes are not a whole, sane image.
    """
    if not data:
        raise BadImage("empty file (0 bytes)")
    size = image_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise BadImage(
            f"claims {size[0]}×{size[1]} pixels, over the {MAX_PIXELS:,}-pixel limit "
            "(a decompression bomb or a huge scan); refused without decoding"
        )
    if data[:2] == b"\xff\xd8" and _jpeg_truncated(data):
        raise BadImage("truncated JPEG (no end-of-image marker after the last scan)")
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    except cv2.error as e:
        raise BadImage(f"refused by the decoder: {str(e).strip().splitlines()[-1]}") from None
    if img is None or img.size == 0:
        raise BadImage(f"cannot be decoded ({_what_is(data)})")
    return resize_area(img, width)


def load_rgb(source: Source, name: str, width: int) -> np.ndarray:
    return decode_rgb(source.read(name), width)


# --- parallel, ordered, bounded ---------------------------------------------------------------


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 1)


def parallel_map(fn: Callable[[str], object], items: Iterable[str], workers: int,
                 chunk: int = 8) -> Iterator[object]:
    """`fn` over `items` on `workers` threads, results in input order, exceptions as values.

    At most `4 × workers` chunks are in flight, so memory stays bounded whatever the input size.
    Small chunks keep the last ones from leaving a core idle at the end (8 beat 32 by ~5% on
    2,000 photos and 2 cores).
    """
    def run(batch: list[str]) -> list[object]:
        out: list[object] = []
        for item in batch:
            try:
                out.append(fn(item))
            except (BadImage, OSError) as e:
                out.append(e)
        return out

    cv2.setNumThreads(1)  # one OpenCV thread per worker: no oversubscription
    items = iter(items)
    pending: deque[Future[list[object]]] = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while True:
            while len(pending) < 4 * workers:
                batch = [x for _, x in zip(range(chunk), items, strict=False)]
                if not batch:
                    break
                pending.append(pool.submit(run, batch))
            if not pending:
                return
            yield from pending.popleft().result()
