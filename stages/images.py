"""Finding and naming images: folders or zips, Kaggle names or class folders.

What a source holds and what each file is called (its label, its id); turning a file into pixels
is decode.py's job, and running that on many files at once pool.py's.
"""

from __future__ import annotations

import os
import re
import threading
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from stages import dicom
from stages.cli import UserError, some
from stages.decode import BadImage
from stages.limits import default_workers as default_workers  # re-exported: the stage's default
from stages.testset import kaggle_ids

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
}) | dicom.EXTS  # and DICOM, read with pydicom (stages/dicom.py), as are extensionless DICOM files
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


class DataError(UserError, ValueError):
    """The input data cannot make a correct output; the message names the files and the fix."""


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
        self._members = {_member_name(_utf8(i)): i.filename for i in infos if not i.is_dir()}
        self._members.pop("", None)
        names = [_member_name(_utf8(i)) for i in infos if not i.is_dir()]
        # A zip may hold one name twice; only the last copy is readable by name, so the first
        # would silently become a second copy of it.
        dups = sorted(n for n, count in Counter(names).items() if count > 1)
        if dups:
            raise DataError(f"{self.path}: holds these names more than once: {some(dups)}. "
                            "Rebuild the zip with one member per name.")
        folders = {_member_name(_utf8(i)) for i in infos if i.is_dir()}
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
        except _ZIP_MEMBER_ERRORS as e:
            # A damaged, encrypted or oddly compressed member is one bad file, not a crash.
            raise BadImage(f"cannot be read from the zip: {e}") from None

    def head(self, name: str, size: int) -> bytes:
        """The first `size` bytes of a file (a zip member is inflated only that far); b"" where
        it cannot be read (reading it whole then gives the reason)."""
        try:
            member = self._members.get(name, name)
            with (self._zip().open(member) if self.is_zip else
                  (self.path / name).open("rb")) as f:
                return f.read(size)
        except (OSError, *_ZIP_MEMBER_ERRORS):
            return b""


# What reading a damaged, encrypted or oddly compressed zip member raises.
_ZIP_MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError)


def _utf8(info: zipfile.ZipInfo) -> str:
    """A member's name as its folder had it. Info-ZIP's `zip` on Linux and macOS stores the
    name's UTF-8 bytes without the flag that says so, and zipfile then reads them as the
    standard's default, cp437 (`café.jpg` → `caf├⌐.jpg`): such names are read as UTF-8 where
    their bytes are UTF-8, as `unzip` does, so a folder and its zip name rows alike."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("utf-8")
    except UnicodeError:  # a DOS or Windows name in its code page: kept as zipfile read it
        return info.filename


def _member_name(stored: str) -> str:
    """A zip member's name without `./` components or a trailing slash."""
    return "/".join(p for p in stored.split("/") if p not in ("", "."))


def _litter(part: str) -> bool:
    """A hidden file or folder, or macOS's `__MACOSX`: never an image, never a class."""
    return part.startswith(".") or part == "__MACOSX"


def is_ignored(name: str) -> bool:
    """Hidden files, macOS/Windows litter and non-image extensions: skipped and counted (by the
    name alone: listing keeps an extensionless file whose bytes say DICOM, _unnamed_dicom)."""
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
    """Drop leading folders shared by every training file (`train/cat.0.jpg` → `cat.0.jpg`),
    whatever the wrapper folder is called (the test side keeps its folders: testset.py reads
    them against the classes).

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
                f"`dog.N.jpg`: {some(bad)}. Rename or remove them, or use one subfolder per class."
            )
        # The name itself last: `cat.1.jpg` and `cat.01.jpg` (or `a.jpg`, `A.jpg`) in one order,
        # whatever order the folder or zip lists them in.
        order = sorted(parsed, key=lambda t: (t[0][0], t[0][1], _natural_key(t[1]), t[1]))  # type: ignore[index]
        classes = list(KAGGLE_CLASSES)
        files = [n for _, n in order]
        labels = [p[0] for p, _ in order]  # type: ignore[index]
    elif 0 not in depths:
        classes = subfolders(folders, prefix)  # empty ones too: a class must not vanish
        _no_empty_classes(source, prefix, classes, rel, ignored)
        files, labels = _by_class(rel, prefix, classes)
    else:
        raise _mixed_layout(source, prefix, rel)
    if len(set(labels)) < 2:
        raise DataError(f"{source.path}: only one class ({classes[labels[0]]}); need at least two")
    return Listing(files=files, labels=labels, classes=classes, ignored=sorted(ignored),
                   prefix=prefix)


def list_test(source: Source) -> Listing:
    """The images to score, any names, listed without knowing the training classes (the test
    side is a stage of its own), so its folders are kept as they are: whether a folder is a
    class or a wrapper needs the classes (stages/testset.py reads them against those). Only the
    folder a zip was made of (`zip -r batch2.zip batch2`: every file under `batch2/`) is
    dropped, so a folder and its zip give the same rows.

    - Images in top folders (`Cat/1.jpg`, `patient7/a.dcm`): `labels` index those folders, which
      are `classes`.
    - Kaggle's numbered images (`1.jpg`): `ids`.
    Files are ordered by folder, then name (numbers by value), so Kaggle ids ascend.
    """
    ignored, images, _ = _images(source, TEST_HELP)
    prefix = _zipped_folder(source, images)
    rel = [n[len(prefix):] for n in images]
    in_folders = all("/" in r for r in rel)
    classes = sorted({r.split("/", 1)[0] for r in rel}) if in_folders else []
    files, labels = _by_class(rel, prefix, classes) if in_folders else \
        ([prefix + r for r in sorted(rel, key=lambda r: (_natural_key(r), r))], [])
    ids = kaggle_ids([f[len(prefix):] for f in files])
    return Listing(files=files, labels=labels, ids=ids, classes=classes, ignored=sorted(ignored),
                   prefix=prefix)


def _zipped_folder(source: Source, images: Sequence[str]) -> str:
    """`batch2/` for a `batch2.zip` whose every image is under `batch2/`, else ""."""
    top = source.path.stem + "/"
    return top if source.is_zip and all(n.startswith(top) for n in images) else ""


def _images(source: Source, help: str) -> tuple[list[str], list[str], list[str]]:
    """(ignored files, image files, folders) of a source; no images at all is an error."""
    all_names, folders = source.tree()
    kept = {n for n in all_names if not is_ignored(n) or _unnamed_dicom(source, n)}
    ignored = [n for n in all_names if n not in kept]
    images = [n for n in all_names if n in kept]
    if not images:
        raise DataError(f"{source.path}: holds no images ({len(ignored)} other files). {help}")
    check_utf8_names(source, images)
    return ignored, images, folders


def check_utf8_names(source: Source, images: Sequence[str]) -> None:
    """Names the file system holds as bytes that are not UTF-8 (`caf\xe9.png`, as old cameras
    and Windows zips wrote Latin-1) stop here, before decoding: the resized file stores names
    as UTF-8, and a name changed on the way would no longer find its file."""
    bad = [n for n in images if not _encodes(n)]
    if bad:
        shown = [f"$'{os.fsencode(source.path / n).decode('utf-8', 'backslashreplace')}'"
                 for n in bad]  # bash's quoting: a user can paste it into `mv`
        raise DataError(
            f"{source.path}: {len(bad)} image file name(s) are not UTF-8: {some(shown)}. "
            f"Rename them, e.g. `mv {shown[0]} NEWNAME`, or all at once "
            f"from Latin-1: `convmv -f latin1 -t utf-8 -r --notest {source.path}`")


def _encodes(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.scandir keeps undecodable bytes as surrogates
        return False
    return True


def _unnamed_dicom(source: Source, name: str) -> bool:
    """A file without an extension (`IM0001`; or a UID name, `1.2.840.113619.2.5`, whose last
    part is digits) whose first bytes say DICOM, as PACS exports and DICOMDIR folders name them;
    not the DICOMDIR index itself, which holds no image. Only such files are read while
    listing, and only their first 132 bytes."""
    path = PurePosixPath(name)
    return ((not path.suffix or path.suffix[1:].isdigit()) and path.name.upper() != "DICOMDIR"
            and not any(_litter(p) for p in path.parts)
            and dicom.is_dicom(source.head(name, dicom.HEAD)))


def _no_empty_classes(source: Source, prefix: str, folders: Sequence[str], rel: Sequence[str],
                      ignored: Sequence[str]) -> None:
    """Each of `folders` (under `prefix`) must hold an image: one that holds none would drop a
    class, and shift the labels of the classes after it, without a word."""
    full = {r.split("/", 1)[0] for r in rel}
    empty = [f"{prefix}{f} ({_holding(ignored, f'{prefix}{f}/')})" for f in folders
             if f not in full]
    if empty:
        raise DataError(
            f"{source.path}: {len(empty)} class folder(s) hold no images: {some(empty)}. Add "
            "images (JPEG, PNG, WebP, TIFF, BMP, GIF, AVIF, …; convert HEIC and raw files to JPEG) "
            "or remove the folder.")


def _holding(ignored: Sequence[str], folder: str) -> str:
    inside = [n for n in ignored if n.startswith(folder)]
    if not inside:
        return "empty"
    kinds = sorted({PurePosixPath(n).suffix.lower() or PurePosixPath(n).name for n in inside})
    return f"only {len(inside)} other file(s): {some(kinds, 5)}"


def _by_class(rel: Sequence[str], prefix: str, classes: list[str]) -> tuple[list[str], list[int]]:
    """Files under class folders (`Cat/1.jpg`), sorted by label then natural name; labels are
    the indices of their folders in `classes`."""
    keyed = sorted((classes.index(r.split("/", 1)[0]), _natural_key(r), prefix + r) for r in rel)
    return [n for _, _, n in keyed], [c for c, _, _ in keyed]


def _mixed_layout(source: Source, prefix: str, rel: Sequence[str]) -> DataError:
    loose = sorted(prefix + r for r in rel if "/" not in r)
    return DataError(
        f"{source.path}: mixes images at the top level with class subfolders; loose images: "
        f"{some(loose)}. Use either Kaggle names in one folder or one subfolder per class."
    )

