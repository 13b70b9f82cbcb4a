"""stages/images.py: names and layouts, sources (folders, zips, links), every format listed.

The files are made here, at test time, with OpenCV and Pillow; the makers below and `BAD`
(undecodable bytes and the reason each must give) are shared with test_decode.py and
test_resize.py.
"""

from __future__ import annotations

import io
import os
import re
import warnings
import zipfile
from pathlib import Path

import cv2
import imagegen
import numpy as np
import pytest
from PIL import Image

from stages import decode, h5io, images
from stages.decode import BadImage
from stages.images import (
    IMAGE_EXTS,
    DataError,
    Source,
    is_ignored,
    list_test,
    list_train,
    parse_kaggle_label,
    strip_common_top,
)
from stages.testset import parse_test_id

REPO = Path(__file__).resolve().parents[1]
W = 32  # output side: tiny keeps the tests fast


# --- real files, made here --------------------------------------------------------------------


def encode(bgr: np.ndarray, ext: str = ".jpg", *params: int) -> bytes:
    ok, buf = cv2.imencode(ext, bgr, list(params))
    assert ok
    return buf.tobytes()


def noisy_jpeg(w: int = 64, h: int = 48, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return encode(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def pil_bytes(im: Image.Image, fmt: str, **kw: object) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **kw)
    return out.getvalue()


HTML = b"\xef\xbb\xbf\n<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>\n"
# Undecodable files as they turn up in real data sets, and the reason each must give.
BAD: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "empty file (0 bytes)"),
    "truncated": (noisy_jpeg()[:1500], "truncated JPEG"),
    "not_an_image": (b"PK\x03\x04 this is some other file " * 20, "not an image"),
    "html": (HTML, "an HTML or XML page"),
}


def write(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def zip_of(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, data in files.items():
            zf.writestr(rel, data)
    return path


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), [
    ("cat.12.jpg", (0, 12)),
    ("dog.7.JPG", (1, 7)),
    ("CAT.3.jpeg", (0, 3)),
    ("train/dog.0.png", (1, 0)),
    ("cat.007.jpg", (0, 7)),
    ("cat.jpg", None),
    ("bird.3.jpg", None),
    ("cat.3.4.jpg", None),
    ("cat.-1.jpg", None),
    ("dog.x.jpg", None),
])
def test_kaggle_label_from_name(name: str, expected: tuple[int, int] | None) -> None:
    assert parse_kaggle_label(name) == expected


@pytest.mark.parametrize(("name", "expected"), [
    ("1.jpg", 1),
    ("12500.JPG", 12500),
    ("007.jpeg", 7),
    ("test/42.png", 42),
    ("abc.jpg", None),
    ("1.2.jpg", None),
    ("cat.1.jpg", None),
    ("-3.jpg", None),
    ("1" * 19 + ".jpg", None),  # would overflow the int64 `ids`
])
def test_test_id_from_name(name: str, expected: int | None) -> None:
    assert parse_test_id(name) == expected


@pytest.mark.parametrize(("name", "ignored"), [
    ("Thumbs.db", True),
    (".DS_Store", True),
    ("Cat/Thumbs.db", True),
    (".hidden.jpg", True),
    ("__MACOSX/train/._cat.0.jpg", True),
    (".ipynb_checkpoints/cat.0.jpg", True),
    ("notes.txt", True),
    ("cat.0.jpg", False),
    ("cat.0.JPG", False),
    ("Dog/1.jpeg", False),
    ("1.PNG", False),
])
def test_hidden_and_non_image_files_are_ignored(name: str, ignored: bool) -> None:
    assert is_ignored(name) is ignored


def kaggle(rel: list[str]) -> bool:
    return all(r.startswith(("cat.", "dog.")) for r in rel)


@pytest.mark.parametrize(("names", "prefix", "rel"), [
    (["cat.0.jpg", "dog.0.jpg"], "", ["cat.0.jpg", "dog.0.jpg"]),
    (["train/cat.0.jpg", "train/dog.0.jpg"], "train/", ["cat.0.jpg", "dog.0.jpg"]),
    (["a/b/cat.0.jpg", "a/b/dog.0.jpg"], "a/b/", ["cat.0.jpg", "dog.0.jpg"]),
    (["PetImages/Cat/1.jpg", "PetImages/Dog/1.jpg"], "PetImages/", ["Cat/1.jpg", "Dog/1.jpg"]),
    (["Cat/1.jpg", "Cat/2.jpg"], "", ["Cat/1.jpg", "Cat/2.jpg"]),  # one class stays one class
    # a wrapper named like a class is still a wrapper: it holds folders, not images
    (["cat/cat/1.jpg", "cat/dog/2.jpg"], "cat/", ["cat/1.jpg", "dog/2.jpg"]),
])
def test_strip_common_top(names: list[str], prefix: str, rel: list[str]) -> None:
    assert strip_common_top(names, (), kaggle) == (prefix, rel)


def test_strip_common_top_stops_beside_other_folders() -> None:
    # Every image is in Cat/sub, but Cat has a sibling (an empty Dog): Cat is a class, not a top.
    names = ["Cat/sub/1.jpg", "Cat/sub/2.jpg"]
    assert strip_common_top(names) == ("Cat/", ["sub/1.jpg", "sub/2.jpg"])
    assert strip_common_top(names, ["Cat", "Cat/sub", "Dog", ".git"]) == ("", names)
    assert strip_common_top(names, ["Cat", "Cat/sub", ".git"]) == ("Cat/", ["sub/1.jpg",
                                                                           "sub/2.jpg"])


def test_a_training_wrapper_named_like_a_class_is_stripped(tmp_path: Path) -> None:
    """`cat/cat/1.jpg`, `cat/dog/2.jpg` is a wrapper `cat` around the class folders cat and dog
    (the test side, which cannot know, asks: tests/test_testset.py)."""
    write(tmp_path, dict.fromkeys(["cat/cat/1.jpg", "cat/dog/2.jpg", "cat/dog/3.jpg"], b""))
    listing = list_train(Source(tmp_path))
    assert listing.classes == ["cat", "dog"] and listing.labels == [0, 1, 1]
    assert listing.names == ["cat/1.jpg", "dog/2.jpg", "dog/3.jpg"]


# --- listing a source ---------------------------------------------------------------------------


LITTER = {"Thumbs.db": b"x", ".DS_Store": b"x", ".cat.5.jpg": b"x", "notes.txt": b"x"}


def test_kaggle_layout_any_extension_case_sorted_litter_counted(tmp_path: Path) -> None:
    names = ["dog.3.JPEG", "cat.10.JPG", "cat.2.jpeg", "dog.0.jpg", "cat.1.png"]
    write(tmp_path, {**dict.fromkeys(names, b""), **LITTER})
    listing = list_train(Source(tmp_path))
    assert listing.files == ["cat.1.png", "cat.2.jpeg", "cat.10.JPG", "dog.0.jpg", "dog.3.JPEG"]
    assert listing.labels == [0, 0, 0, 1, 1]
    assert listing.classes == ["cat", "dog"]
    assert listing.ignored == sorted(LITTER)


def test_class_folders_label_by_sorted_class_name(tmp_path: Path) -> None:
    names = ["PetImages/Dog/1.jpg", "PetImages/Cat/10.jpg", "PetImages/Cat/2.JPG",
             "PetImages/Bird/3.png", "PetImages/Cat/Thumbs.db", "PetImages/Dog/sub/4.jpg"]
    write(tmp_path, dict.fromkeys(names, b""))
    listing = list_train(Source(tmp_path))
    assert listing.classes == ["Bird", "Cat", "Dog"]
    assert listing.files == ["PetImages/Bird/3.png", "PetImages/Cat/2.JPG",
                             "PetImages/Cat/10.jpg", "PetImages/Dog/1.jpg",
                             "PetImages/Dog/sub/4.jpg"]
    assert listing.labels == [0, 1, 1, 2, 2]
    assert listing.names == ["Bird/3.png", "Cat/2.JPG", "Cat/10.jpg", "Dog/1.jpg", "Dog/sub/4.jpg"]
    assert listing.ignored == ["PetImages/Cat/Thumbs.db"]


def test_names_that_do_not_parse_are_all_named(tmp_path: Path) -> None:
    write(tmp_path, dict.fromkeys(["cat.jpg", "bird.3.jpg", "cat.1.jpg", "dog.1.jpg"], b""))
    with pytest.raises(DataError, match=r"2 image name\(s\).*bird\.3\.jpg, cat\.jpg"):
        list_train(Source(tmp_path))


def test_loose_images_beside_class_folders_are_an_error(tmp_path: Path) -> None:
    write(tmp_path, dict.fromkeys(["Cat/1.jpg", "Dog/1.jpg", "cat.0.jpg"], b""))
    with pytest.raises(DataError, match=r"loose images: cat\.0\.jpg"):
        list_train(Source(tmp_path))


@pytest.mark.parametrize("lister", [list_train, list_test])
@pytest.mark.parametrize("files", [{}, LITTER], ids=["empty", "only-litter"])
def test_a_source_without_images_is_an_error(tmp_path: Path, lister: object,
                                            files: dict[str, bytes]) -> None:
    write(tmp_path / "data", files).mkdir(exist_ok=True)
    with pytest.raises(DataError, match=rf"holds no images \({len(files)} other files\)"):
        lister(Source(tmp_path / "data"))  # type: ignore[operator]


def test_an_empty_zip_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="holds no images"):
        list_train(Source(zip_of(tmp_path / "train.zip", {})))


@pytest.mark.parametrize("names", [["cat.0.jpg", "cat.1.jpg"], ["Cat/0.jpg", "Cat/1.jpg"]])
def test_one_class_is_an_error(tmp_path: Path, names: list[str]) -> None:
    write(tmp_path, dict.fromkeys(names, b""))
    with pytest.raises(DataError, match=r"only one class \((cat|Cat)\)"):
        list_train(Source(tmp_path))


def test_missing_or_wrong_source_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist.*kaggle competitions download"):
        Source(tmp_path / "nowhere")
    (tmp_path / "train.tar").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"train\.tar: is a file but not a \.zip"):
        Source(tmp_path / "train.tar")


def test_test_ids_sorted_numerically(tmp_path: Path) -> None:
    write(tmp_path, {**dict.fromkeys(["10.jpg", "2.JPG", "1.png", "3.jpeg"], b""), **LITTER})
    listing = list_test(Source(tmp_path))
    assert listing.ids == [1, 2, 3, 10]
    assert listing.files == ["1.png", "2.JPG", "3.jpeg", "10.jpg"]
    assert listing.labels == [] and listing.classes == []
    assert len(listing.ignored) == len(LITTER)


@pytest.mark.parametrize("names", [
    ["1.jpg", "1.png", "01.jpeg", "2.jpg"],  # a number twice: which image is id 1?
    ["abc.jpg", "1.jpg", "cat.2.jpg", "1" * 19 + ".jpg"],  # names, and a number past int64
    ["IMG_0001.JPG", "scan 2.png", "photo.webp"],
])
def test_test_images_of_any_name_are_listed_by_name(tmp_path: Path, names: list[str]) -> None:
    write(tmp_path, dict.fromkeys(names, b""))
    listing = list_test(Source(tmp_path))
    assert listing.ids == [] and listing.labels == []
    assert sorted(listing.names) == sorted(names)
    assert listing.files == sorted(names, key=lambda n: [
        int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", n)])


def test_a_test_set_in_folders_labels_them_by_its_own_folders(tmp_path: Path) -> None:
    """The test side does not know the training classes: its folders are its classes, matched
    to the model's by name in `predict`; a wrapper is kept (only the classes tell it from a
    class: stages/testset.py)."""
    names = ["Dog/1.jpg", "Cat/10.jpg", "Cat/2.JPG", "Dog/sub/4.jpg"]
    write(tmp_path, {**dict.fromkeys(names, b""), "Cat/Thumbs.db": b"x"})
    listing = list_test(Source(tmp_path))
    assert listing.names == ["Cat/2.JPG", "Cat/10.jpg", "Dog/1.jpg", "Dog/sub/4.jpg"]
    assert listing.labels == [0, 0, 1, 1]
    assert listing.classes == ["Cat", "Dog"]
    assert listing.ids == []
    assert listing.ignored == ["Cat/Thumbs.db"]
    write(tmp_path / "wrapped", {f"test/{n}": b"" for n in names})
    assert list_test(Source(tmp_path / "wrapped")).names == [f"test/{n}" for n in listing.names]


def test_a_test_folder_of_one_class_is_kept(tmp_path: Path) -> None:
    write(tmp_path, dict.fromkeys(["dog/a.jpg", "dog/b.jpg"], b""))
    listing = list_test(Source(tmp_path))
    assert listing.classes == ["dog"] and listing.labels == [0, 0]
    assert listing.names == ["dog/a.jpg", "dog/b.jpg"]


def test_kaggle_test_ids_inside_a_top_folder_are_the_ids(tmp_path: Path) -> None:
    src = Source(zip_of(tmp_path / "test.zip", {"test/2.jpg": b"", "test/10.jpg": b""}))
    listing = list_test(src)
    assert listing.ids == [2, 10] and listing.labels == [] and listing.names == ["2.jpg", "10.jpg"]


def test_loose_test_images_beside_folders_are_named_by_path(tmp_path: Path) -> None:
    write(tmp_path, dict.fromkeys(["Cat/1.jpg", "Dog/2.jpg", "3.jpg"], b""))
    listing = list_test(Source(tmp_path))
    assert listing.labels == [] and listing.ids == []
    assert listing.names == ["3.jpg", "Cat/1.jpg", "Dog/2.jpg"]


def test_zip_entries_starting_with_dot_slash_are_not_hidden(tmp_path: Path) -> None:
    """`zip -r train.zip ./cat ./dog` stores `./cat/1.jpg` and no folder entries."""
    data = noisy_jpeg(32, 24)
    files = {f"./{c}/{i}.jpg": data for c in ("cat", "dog") for i in range(2)}
    src = Source(zip_of(tmp_path / "train.zip", files))
    listing = list_train(src)
    assert listing.classes == ["cat", "dog"] and listing.names[0] == "cat/0.jpg"
    assert src.read(listing.files[0]) == data


@pytest.mark.parametrize(("n_classes", "dtype"), [
    (2, np.uint8), (256, np.uint8), (257, np.uint16), (70_000, np.uint32)])
def test_labels_hold_any_number_of_classes(n_classes: int, dtype: type) -> None:
    assert h5io.label_dtype(n_classes) == dtype
    assert np.iinfo(h5io.label_dtype(n_classes)).max >= n_classes - 1


def test_zip_with_top_folder_and_mac_litter(tmp_path: Path) -> None:
    jpg = noisy_jpeg()
    src = Source(zip_of(tmp_path / "train.zip", {
        "train/dog.0.jpg": jpg, "train/cat.0.jpg": jpg, "train/.DS_Store": b"x",
        "__MACOSX/train/._cat.0.jpg": b"x",
    }))
    listing = list_train(src)
    assert listing.files == ["train/cat.0.jpg", "train/dog.0.jpg"]
    assert listing.names == ["cat.0.jpg", "dog.0.jpg"]
    assert len(listing.ignored) == 2
    assert src.read("train/cat.0.jpg") == jpg


def test_zip_holding_a_name_twice_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "train.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate; that is the point
        with zipfile.ZipFile(path, "w") as zf:
            for name in ("cat.0.jpg", "dog.0.jpg", "cat.0.jpg"):
                zf.writestr(name, b"")
    with pytest.raises(DataError, match=r"more than once: cat\.0\.jpg\."):
        list_train(Source(path))


def test_damaged_zip_member_is_one_bad_image(tmp_path: Path) -> None:
    path = zip_of(tmp_path / "train.zip", {"cat.0.jpg": noisy_jpeg(), "dog.0.jpg": noisy_jpeg()})
    data = bytearray(path.read_bytes())
    info = zipfile.ZipFile(path).getinfo("cat.0.jpg")
    start = info.header_offset + 30 + len(info.filename)  # local header, then the deflated bytes
    data[start + 10:start + 200] = bytes(190)
    path.write_bytes(bytes(data))
    src = Source(path)
    with pytest.raises(BadImage, match="cannot be read from the zip"):
        src.read("cat.0.jpg")
    assert src.read("dog.0.jpg") == noisy_jpeg()


# --- symbolic links ---------------------------------------------------------------------------


def test_a_class_folder_behind_a_symbolic_link_keeps_every_label(tmp_path: Path) -> None:
    write(tmp_path / "train", {"Bird/1.jpg": b"", "Cat/1.jpg": b"", "Zebra/1.jpg": b""})
    write(tmp_path / "elsewhere", {"Dog/1.jpg": b"", "Dog/2.jpg": b""})
    (tmp_path / "train/Dog").symlink_to(tmp_path / "elsewhere/Dog", target_is_directory=True)
    listing = list_train(Source(tmp_path / "train"))
    assert listing.classes == ["Bird", "Cat", "Dog", "Zebra"]  # Zebra stays label 3
    assert listing.files == ["Bird/1.jpg", "Cat/1.jpg", "Dog/1.jpg", "Dog/2.jpg", "Zebra/1.jpg"]
    assert listing.labels == [0, 1, 2, 2, 3]


def test_symbolic_links_in_a_test_set(tmp_path: Path) -> None:
    write(tmp_path / "elsewhere", {"Dog/7.jpg": b"", "photo.jpg": b""})
    write(tmp_path / "test", {"Cat/1.jpg": b""})
    (tmp_path / "test/Dog").symlink_to(tmp_path / "elsewhere/Dog", target_is_directory=True)
    (tmp_path / "test/Cat/2.jpg").symlink_to(tmp_path / "elsewhere/photo.jpg")
    (tmp_path / "test-link").symlink_to(tmp_path / "test", target_is_directory=True)
    listing = list_test(Source(tmp_path / "test-link"))
    assert listing.names == ["Cat/1.jpg", "Cat/2.jpg", "Dog/7.jpg"]
    assert listing.labels == [0, 0, 1]


def test_a_link_cycle_ends_and_lists_each_file_once(tmp_path: Path) -> None:
    write(tmp_path / "train", {"Cat/1.jpg": b"", "Dog/1.jpg": b""})
    (tmp_path / "train/Cat/up").symlink_to(tmp_path / "train", target_is_directory=True)
    (tmp_path / "train/Dog/here").symlink_to(".", target_is_directory=True)
    listing = list_train(Source(tmp_path / "train"))
    assert listing.files == ["Cat/1.jpg", "Dog/1.jpg"]


def test_a_broken_link_is_listed_so_that_reading_it_gives_the_reason(tmp_path: Path) -> None:
    write(tmp_path / "train", {"cat.0.jpg": b"", "dog.0.jpg": b""})
    (tmp_path / "train/dog.1.jpg").symlink_to(tmp_path / "gone.jpg")
    source = Source(tmp_path / "train")
    assert "dog.1.jpg" in list_train(source).files
    with pytest.raises(FileNotFoundError):
        source.read("dog.1.jpg")


def test_a_folder_that_cannot_be_listed_is_an_error(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # os.walk skipped such a folder, and every image in it, without a word.
    write(tmp_path, {"Cat/1.jpg": b"", "Dog/1.jpg": b""})
    scandir = os.scandir

    def no_entry(path: Path) -> object:
        if Path(path).name == "Dog":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(images.os, "scandir", no_entry)
    with pytest.raises(DataError, match=r"Dog: cannot be listed \(Permission denied\)"):
        list_train(Source(tmp_path))


# --- every format OpenCV reads, and classes that must not vanish -------------------------------


def _samples() -> dict[str, bytes]:
    """A real file for each name in IMAGE_EXTS, made by OpenCV or, where it cannot, Pillow
    (DICOM by pydicom)."""
    rng = np.random.default_rng(4)
    bgr = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)  # JPEG 2000 needs ≥ 64 px a side
    rgb = Image.fromarray(bgr[..., ::-1])
    by_opencv = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".webp", ".avif", ".gif",
                 ".tif", ".tiff", ".jp2", ".ppm", ".pnm", ".pam", ".sr", ".ras")
    return {ext: encode(bgr, ext) for ext in by_opencv} | {
        ".jfif": encode(bgr, ".jpg"),
        ".apng": pil_bytes(rgb, "PNG", save_all=True, append_images=[rgb.rotate(180)]),
        ".j2k": pil_bytes(rgb, "JPEG2000", no_jp2=True),  # a bare codestream
        ".pbm": encode(bgr[..., 0], ".pbm"),
        ".pgm": encode(bgr[..., 0], ".pgm"),
        ".pxm": encode(bgr, ".ppm"),
        ".pfm": encode(bgr.astype(np.float32) / 255, ".pfm"),
        ".hdr": encode(bgr.astype(np.float32) / 255, ".hdr"),
        ".pic": encode(bgr.astype(np.float32) / 255, ".pic"),
        ".dcm": imagegen.dicom(bgr[..., 0]),  # DICOM: pydicom, not OpenCV (test_decode.py)
        ".dicom": imagegen.dicom(np.ascontiguousarray(bgr[..., ::-1]), "RGB"),
    }


SAMPLES = _samples()


def test_every_accepted_extension_has_a_real_sample() -> None:
    assert set(SAMPLES) == IMAGE_EXTS


@pytest.mark.parametrize("ext", sorted(SAMPLES))
def test_a_class_of_any_format_opencv_reads_is_listed_and_decoded(tmp_path: Path,
                                                                  ext: str) -> None:
    write(tmp_path, {f"Cat/1{ext.upper()}": SAMPLES[ext], "Dog/1.jpg": noisy_jpeg()})
    source = Source(tmp_path)
    listing = list_train(source)
    assert listing.classes == ["Cat", "Dog"] and listing.ignored == []
    out = decode.load_rgb(source, listing.files[0], W)
    assert out.shape == (W, W, 3) and out.dtype == np.uint8


def _empty_dirs(root: Path, *names: str) -> None:
    for name in names:
        (root / name).mkdir(parents=True)


@pytest.mark.parametrize(("files", "dirs", "named"), [
    ({}, ["Dog"], "Dog (empty)"),
    ({"Dog/IMG_1.HEIC": b"x", "Dog/IMG_2.heic": b"x", "Dog/.DS_Store": b"x"}, [],
     "Dog (only 3 other file(s): .DS_Store, .heic)"),
    ({"Dog/.thumbnails/1.jpg": b""}, [], "Dog (only 1 other file(s): .jpg)"),
    ({}, ["Dog/2019"], "Dog (empty)"),
], ids=["empty", "only-heic-and-litter", "only-hidden-images", "only-an-empty-folder"])
@pytest.mark.parametrize("packed", ["folder", "zip"])
def test_a_class_folder_without_images_is_named(tmp_path: Path, files: dict[str, bytes],
                                                dirs: list[str], named: str, packed: str) -> None:
    root = write(tmp_path / "pets", {"PetImages/Cat/1.jpg": b"", "PetImages/Zebra/1.jpg": b""}
                 | {f"PetImages/{k}": v for k, v in files.items()})
    _empty_dirs(root / "PetImages", *dirs)
    if packed == "zip":
        with zipfile.ZipFile(tmp_path / "pets.zip", "w") as zf:
            for path in sorted(root.rglob("*")):
                zf.write(path, path.relative_to(root).as_posix())  # folders too, as zip does
        root = tmp_path / "pets.zip"
    with pytest.raises(DataError, match=re.escape(
            f"{root}: 1 class folder(s) hold no images: PetImages/{named}.")):
        list_train(Source(root))


def test_hidden_folders_and_macos_litter_are_not_classes(tmp_path: Path) -> None:
    write(tmp_path, {"Cat/1.jpg": b"", "Dog/1.jpg": b"", ".ipynb_checkpoints/Cat/1.jpg": b"",
                     "__MACOSX/Cat/._1.jpg": b"x", ".git/HEAD": b"x"})
    _empty_dirs(tmp_path, ".cache")
    listing = list_train(Source(tmp_path))
    assert listing.classes == ["Cat", "Dog"]
    assert len(listing.ignored) == 3


def test_a_test_folder_without_images_is_no_class(tmp_path: Path) -> None:
    # A test set may lack classes: its classes are the folders that hold images.
    write(tmp_path / "test", {"Cat/1.jpg": b"", "Dog/Thumbs.db": b"x", "notes/a.txt": b"x"})
    listing = list_test(Source(tmp_path / "test"))
    assert listing.classes == ["Cat"] and listing.names == ["Cat/1.jpg"]
    assert listing.ignored == ["Dog/Thumbs.db", "notes/a.txt"]


def test_names_that_sort_alike_keep_one_order_in_a_folder_and_its_zip(tmp_path: Path) -> None:
    """`A.jpg`/`a.jpg` and `cat.1.jpg`/`cat.01.jpg` tie by their natural order: the name breaks
    the tie, so a folder and its zip (listed in other orders) give the same rows."""
    test_names = ["a.jpg", "A.jpg", "b.jpg"]
    train_names = ["cat.1.jpg", "cat.01.jpg", "dog.1.jpg", "dog.01.jpg"]
    write(tmp_path / "test", dict.fromkeys(test_names, b""))
    write(tmp_path / "train", dict.fromkeys(train_names, b""))
    zipped = {n: b"" for n in reversed(test_names)}
    assert list_test(Source(tmp_path / "test")).files == list_test(
        Source(zip_of(tmp_path / "test.zip", zipped))).files == ["A.jpg", "a.jpg", "b.jpg"]
    assert list_train(Source(tmp_path / "train")).files == list_train(Source(zip_of(
        tmp_path / "train.zip", dict.fromkeys(reversed(train_names), b"")))).files == [
        "cat.01.jpg", "cat.1.jpg", "dog.01.jpg", "dog.1.jpg"]


@pytest.mark.parametrize("lister", [list_train, list_test])
def test_a_file_name_that_is_not_utf8_stops_before_decoding(tmp_path: Path,
                                                            lister: object) -> None:
    """`caf\\xe9.png` (Latin-1, as old cameras and Windows zips wrote it) crashed resize with
    UnicodeEncodeError after every image was decoded; now listing names it, pasteable."""
    write(tmp_path / "d", {"cat/1.jpg": b"", "dog/2.jpg": b""})
    (tmp_path / "d/dog").joinpath(os.fsdecode(b"caf\xe9.png")).write_bytes(b"")
    with pytest.raises(DataError, match=r"1 image file name\(s\) are not UTF-8: "
                                        r"\$'.*/d/dog/caf\\xe9\.png'\. Rename them, e\.g\. `mv "):
        lister(Source(tmp_path / "d"))  # type: ignore[operator]
