"""Finding, naming and decoding images: folders or zips, Kaggle names or class folders.

Everything that turns a file into pixels lives here, once (with headers.py, which reads image
headers, and limits.py, the pixel limit): the resize stage only orders the work.
Decoding is OpenCV's (it releases the GIL, so threads really run in parallel), straight to RGB,
because the ImageNet networks were trained on RGB and the original fed them BGR.
"""

from __future__ import annotations

# Before cv2 loads: sets OpenCV's pixel limit (its guard against decompression bombs).
from stages import limits  # isort: skip

import os
import re
import threading
import zipfile
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from stages.area import resize_area
from stages.cli import UserError
from stages.headers import EOI, SOI, image_size, jpeg_end, what_is
from stages.limits import default_workers as default_workers  # re-exported: the stage's default

# What the pinned OpenCV (opencv-python-headless 4.14) decodes, under the names its docs give:
# the codecs its build lists under "Media I/O" (cv2.getBuildInformation()), each extension checked
# by decoding a real file of it (tests/test_images.py makes one of each). Left out: OpenEXR (.exr),
# which OpenCV leaves disabled unless OPENCV_IO_ENABLE_OPENEXR is set; HEIC/HEIF and camera raw
# files, which it cannot read. OpenCV picks the decoder from the bytes, not from the name.
IMAGE_EXTS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif",  # JPEG
    ".png", ".apng", ".bmp", ".dib", ".webp", ".avif", ".gif", ".tif", ".tiff",
    ".jp2", ".j2k",  # JPEG 2000, file and bare codestream
    ".pbm", ".pgm", ".ppm", ".pnm", ".pxm", ".pam", ".pfm",  # Netpbm and PFM
    ".sr", ".ras",  # Sun raster
    ".hdr", ".pic",  # Radiance HDR
})
KAGGLE_CLASSES = ("cat", "dog")  # label 0, 1
DATA_HELP = (
    "Put the Kaggle 'Dogs vs. Cats Redux' data there: `kaggle competitions download -c "
    "dogs-vs-cats-redux-kernels-edition -p data/raw` then unzip train.zip and test.zip into "
    "data/raw (or point params `train_data`/`test_data` at the .zip files), or your own images, "
    "one subfolder per class. See README.md, 'Quickstart'."
)
# The test side knows nothing of the training data (a stage of its own), so its advice covers
# every kind of test set.
TEST_HELP = (
    "Put the images to score there, any file names (Kaggle's test set: `<id>.jpg`), or a "
    "labelled test set, one subfolder per training class; or point param `test_data` at another "
    "folder or .zip. See README.md, 'Score new images'."
)
_KAGGLE_TRAIN = re.compile(r"^(cat|dog)\.(\d+)\.[^.]+$", re.IGNORECASE)
_TEST_ID = re.compile(r"^(\d{1,18})\.[^.]+$")  # 18 digits: every id fits the int64 `ids`


class DataError(UserError, ValueError):
    """The input data cannot make a correct output; the message names the files and the fix."""


class BadImage(ValueError):
    """One file cannot be decoded into an image; the message is the reason."""


def _natural_key(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


# --- sources: a folder or a zip, read in place ------------------------------------------------


class Source:
    """A folder or a .zip of images, read in place (a zip is never unpacked to disk)."""

    def __init__(self, path: str | os.PathLike[str], help: str = DATA_HELP) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"{self.path}: does not exist. {help}")
        self.is_zip = self.path.is_file()
        if self.is_zip and not zipfile.is_zipfile(self.path):
            raise DataError(f"{self.path}: is a file but not a .zip; give a folder or a .zip")
        self._local = threading.local()
        self._members: dict[str, str] = {}  # a zip's names as listed → as stored

    def _zip(self) -> zipfile.ZipFile:
        # One handle per thread: reads through one shared handle would serialise on its lock.
        zf = getattr(self._local, "zf", None)
        if zf is None:
            zf = self._local.zf = zipfile.ZipFile(self.path)
        return zf

    def tree(self) -> tuple[list[str], list[str]]:
        """(every file, every folder), as POSIX paths relative to the source root; folders too,
        so that a class folder without images can be named. Symbolic links are followed."""
        if not self.is_zip:
            return self._walk()
        infos = self._zip().infolist()
        # `zip -r x.zip ./cat` stores `./cat/1.jpg`: listed as `cat/1.jpg` (a leading `.` would
        # make every file look hidden), read by its stored name.
        self._members = {_member_name(i.filename): i.filename for i in infos if not i.is_dir()}
        self._members.pop("", None)
        names = [_member_name(i.filename) for i in infos if not i.is_dir()]
        # A zip may hold one name twice; only the last copy is readable by name, so the first
        # would silently become a second copy of it.
        dups = sorted(n for n, count in Counter(names).items() if count > 1)
        if dups:
            raise DataError(f"{self.path}: holds these names more than once: {_some(dups)}. "
                            "Rebuild the zip with one member per name.")
        folders = {_member_name(i.filename) for i in infos if i.is_dir()}
        folders |= {str(p) for n in names for p in PurePosixPath(n).parents if str(p) != "."}
        folders.discard("")
        return names, sorted(folders)

    def _walk(self) -> tuple[list[str], list[str]]:
        # Symbolic links are followed: a class folder may live elsewhere (`Dog -> /data/Dog`).
        # A link to a folder above it (a cycle) is not: its files are listed already.
        files: list[str] = []
        folders: list[str] = []
        todo = [(self.path, "", frozenset({os.path.realpath(self.path)}))]
        while todo:
            path, rel, above = todo.pop()
            try:
                entries = list(os.scandir(path))
            except OSError as e:  # os.walk would skip it, and its images, without a word
                raise DataError(f"{path}: cannot be listed ({e.strerror}); fix its permissions "
                                "or move it out of the data") from None
            for entry in entries:
                name = rel + entry.name
                try:
                    is_dir = entry.is_dir()  # follows links
                except OSError:
                    is_dir = False
                if not is_dir:  # a file, or a broken link: reading it gives the reason
                    files.append(name)
                    continue
                real = os.path.realpath(entry.path)
                if real not in above:
                    folders.append(name)
                    todo.append((Path(entry.path), name + "/", above | {real}))
        return files, folders

    def read(self, name: str) -> bytes:
        if not self.is_zip:
            return (self.path / name).read_bytes()
        try:
            return self._zip().read(self._members.get(name, name))
        except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as e:
            # A damaged, encrypted or oddly compressed member is one bad file, not a crash.
            raise BadImage(f"cannot be read from the zip: {e}") from None


def _member_name(stored: str) -> str:
    """A zip member's name without `./` components or a trailing slash."""
    return "/".join(p for p in stored.split("/") if p not in ("", "."))


def _litter(part: str) -> bool:
    """A hidden file or folder, or macOS's `__MACOSX`: never an image, never a class."""
    return part.startswith(".") or part == "__MACOSX"


def is_ignored(name: str) -> bool:
    """Hidden files, macOS/Windows litter and non-image extensions: skipped and counted."""
    if any(_litter(p) for p in PurePosixPath(name).parts):
        return True
    return PurePosixPath(name).suffix.lower() not in IMAGE_EXTS


def subfolders(folders: Iterable[str], prefix: str) -> list[str]:
    """The folders directly under `prefix` (`""` or `a/b/`) that can be classes, sorted."""
    return sorted({f[len(prefix):] for f in folders if f.startswith(prefix)
                   and f[len(prefix):] and "/" not in f[len(prefix):]
                   and not _litter(f[len(prefix):])})


def strip_common_top(names: Sequence[str], folders: Sequence[str] = (),
                     flat_layout: Callable[[list[str]], bool] = lambda rel: False
                     ) -> tuple[str, list[str]]:
    """Drop leading folders shared by every file (`train/cat.0.jpg` → `cat.0.jpg`): the one rule
    for training and test sets, whatever the wrapper folder is called.

    A folder that holds subfolders is a wrapper (`PetImages/Cat/1.jpg` keeps `Cat/1.jpg`; so
    does `cat/cat/1.jpg`, `cat/dog/2.jpg`). A folder of loose files is kept, since it may be a
    class (`Cat/1.jpg`: a lone class, which the error must name), unless `flat_layout` says its
    files are a layout of their own (Kaggle names). A folder beside others in `folders` is kept
    too (a class folder beside empty ones, named by the caller). Returns the stripped prefix and
    the relative names, in the input order.
    """
    prefix = ""
    rel = list(names)
    while rel and all("/" in n for n in rel) and len({n.split("/", 1)[0] for n in rel}) == 1:
        if len(subfolders(folders, prefix)) > 1:
            break
        stripped = [n.split("/", 1)[1] for n in rel]
        if all("/" not in s for s in stripped) and not flat_layout(stripped):
            break
        prefix += rel[0].split("/", 1)[0] + "/"
        rel = stripped
    return prefix, rel


# --- labels and ids ---------------------------------------------------------------------------


@dataclass
class Listing:
    """What a source holds: the files to decode, in output order, and what was set aside."""

    files: list[str]                   # names as read from the source, in output order
    labels: list[int] = field(default_factory=list)   # the index of each file's class
    ids: list[int] = field(default_factory=list)      # Kaggle's numbered test images only
    classes: list[str] = field(default_factory=list)  # index = label
    ignored: list[str] = field(default_factory=list)  # non-image files, not an error
    prefix: str = ""  # folders every file shares (`train/` in Kaggle's zip), not part of `names`

    @property
    def names(self) -> list[str]:
        """The files without `prefix`, as the resized files store them: a folder and its zip
        agree."""
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


def _kaggle_names(rel: list[str]) -> bool:
    return any(parse_kaggle_label(r) for r in rel)


def list_train(source: Source) -> Listing:
    """Kaggle names (`cat.N.jpg`, `dog.N.jpg`) or one subfolder per class, sorted by label then
    number; classes of a folder layout are the sorted folder names (label = index)."""
    ignored, images, folders = _images(source, DATA_HELP)
    prefix, rel = strip_common_top(images, folders, _kaggle_names)
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
        classes = subfolders(folders, prefix)  # empty ones too: a class must not vanish
        _no_empty_classes(source, prefix, classes, rel, ignored, "class folder(s)")
        files, labels = _by_class(rel, prefix, classes)
    else:
        raise _mixed_layout(source, prefix, rel)
    if len(set(labels)) < 2:
        raise DataError(f"{source.path}: only one class ({classes[labels[0]]}); need at least two")
    return Listing(files=files, labels=labels, classes=classes, ignored=sorted(ignored),
                   prefix=prefix)


def list_test(source: Source) -> Listing:
    """The images to score, any names, listed without knowing the training classes (the test
    side is a stage of its own), wrapper folders dropped by the one rule of `strip_common_top`
    (a folder of Kaggle's numbered images, as in Kaggle's zip, is a wrapper).

    - Every image in a top folder (`Cat/1.jpg`, `patient7/a.dcm`): `labels` index those folders,
      which are `classes`; `predict` reads them as a labelled test set when they are training
      classes, and as plain folders of images otherwise.
    - Kaggle's numbered images (`1.jpg`): `ids`.
    Files are ordered by folder, then name (numbers by value), so Kaggle ids ascend.
    """
    ignored, images, folders = _images(source, TEST_HELP)
    prefix, rel = strip_common_top(images, folders, _kaggle_ids_only)
    in_folders = all("/" in r for r in rel)
    classes = sorted({r.split("/", 1)[0] for r in rel}) if in_folders else []
    files, labels = _by_class(rel, prefix, classes) if in_folders else \
        ([prefix + r for r in sorted(rel, key=_natural_key)], [])
    return Listing(files=files, labels=labels, ids=_kaggle_ids(files, prefix), classes=classes,
                   ignored=sorted(ignored), prefix=prefix)


def _kaggle_ids_only(rel: list[str]) -> bool:
    return all(parse_test_id(r) is not None for r in rel)


def _kaggle_ids(files: Sequence[str], prefix: str) -> list[int]:
    """Each file's number when every file is a loose `<id>.<ext>` and no number repeats;
    otherwise none, and rows are named by their files."""
    rel = [f[len(prefix):] for f in files]
    ids = [parse_test_id(r) if "/" not in r else None for r in rel]
    if any(i is None for i in ids) or len(set(ids)) < len(ids):
        return []
    return ids  # type: ignore[return-value]


def _images(source: Source, help: str) -> tuple[list[str], list[str], list[str]]:
    """(ignored files, image files, folders) of a source; no images at all is an error."""
    all_names, folders = source.tree()
    ignored = [n for n in all_names if is_ignored(n)]
    images = [n for n in all_names if not is_ignored(n)]
    if not images:
        raise DataError(f"{source.path}: holds no images ({len(ignored)} other files). {help}")
    return ignored, images, folders


def _no_empty_classes(source: Source, prefix: str, folders: Sequence[str], rel: Sequence[str],
                      ignored: Sequence[str], what: str) -> None:
    """Each of `folders` (under `prefix`) must hold an image: one that holds none would drop a
    class, and shift the labels of the classes after it, without a word."""
    full = {r.split("/", 1)[0] for r in rel}
    empty = [f"{prefix}{f} ({_holding(ignored, f'{prefix}{f}/')})" for f in folders
             if f not in full]
    if empty:
        raise DataError(
            f"{source.path}: {len(empty)} {what} hold no images: {_some(empty)}. Add images "
            "(JPEG, PNG, WebP, TIFF, BMP, GIF, AVIF, …; convert HEIC and raw files to JPEG) or "
            "remove the folder.")


def _holding(ignored: Sequence[str], folder: str) -> str:
    inside = [n for n in ignored if n.startswith(folder)]
    if not inside:
        return "empty"
    kinds = sorted({PurePosixPath(n).suffix.lower() or PurePosixPath(n).name for n in inside})
    return f"only {len(inside)} other file(s): {_some(kinds, 5)}"


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


# --- parallel, ordered, bounded ---------------------------------------------------------------


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
