"""stages/images.py (with headers.py and limits.py): names and layouts, and decoding every kind
of awkward file, each one real; where a JPEG ends; the pixel limit.

The awkward files are made here, at test time, with OpenCV and Pillow; `BAD` (undecodable bytes
and the reason each must give) is shared with test_resize.py.
"""

from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import sys
import time
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import imagegen
import numpy as np
import pytest
from PIL import Image

from stages import area, h5io, headers, images, limits
from stages.images import (
    IMAGE_EXTS,
    BadImage,
    DataError,
    Source,
    decode_rgb,
    image_size,
    is_ignored,
    list_test,
    list_train,
    parallel_map,
    parse_kaggle_label,
    parse_test_id,
    strip_common_top,
)

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


def mean_rgb(img: np.ndarray) -> np.ndarray:
    return img.reshape(-1, 3).mean(axis=0)


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


@pytest.mark.parametrize("lister", [list_train, list_test])
def test_one_rule_strips_a_wrapper_named_like_a_class(tmp_path: Path, lister: object) -> None:
    """Both sides, one rule: `cat/cat/1.jpg`, `cat/dog/2.jpg` is a wrapper `cat` around the
    class folders cat and dog (it used to label every test image as the wrapper's class)."""
    write(tmp_path, dict.fromkeys(["cat/cat/1.jpg", "cat/dog/2.jpg", "cat/dog/3.jpg"], b""))
    listing = lister(Source(tmp_path))  # type: ignore[operator]
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
    to the model's by name in `predict`."""
    names = ["test/Dog/1.jpg", "test/Cat/10.jpg", "test/Cat/2.JPG", "test/Dog/sub/4.jpg"]
    write(tmp_path, {**dict.fromkeys(names, b""), "test/Cat/Thumbs.db": b"x"})
    listing = list_test(Source(tmp_path))
    assert listing.names == ["Cat/2.JPG", "Cat/10.jpg", "Dog/1.jpg", "Dog/sub/4.jpg"]
    assert listing.labels == [0, 0, 1, 1]
    assert listing.classes == ["Cat", "Dog"]
    assert listing.ids == []
    assert listing.ignored == ["test/Cat/Thumbs.db"]


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
    """A real file for each name in IMAGE_EXTS, made by OpenCV or, where it cannot, Pillow."""
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
    out = images.load_rgb(source, listing.files[0], W)
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
    listing = list_test(Source(tmp_path))
    assert listing.classes == ["Cat"] and listing.names == ["Cat/1.jpg"]
    assert listing.ignored == ["test/Dog/Thumbs.db", "test/notes/a.txt"]


# --- decoding ---------------------------------------------------------------------------------


def _awkward() -> dict[str, bytes]:
    """One real file of every kind decode_rgb must handle."""
    rng = np.random.default_rng(3)
    bgr = rng.integers(0, 256, (61, 97, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (61, 97, 4), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    photo = Image.fromarray(bgr[..., ::-1])
    return {
        "jpeg": encode(bgr),
        "jpeg-exif-rotated": pil_bytes(photo, "JPEG", exif=exif.tobytes()),
        "jpeg-gray": pil_bytes(photo.convert("L"), "JPEG"),
        "jpeg-cmyk": pil_bytes(photo.convert("CMYK"), "JPEG"),
        "png": encode(bgr, ".png"),
        "png-alpha": encode(rgba, ".png"),
        "png-16bit": encode(bgr.astype(np.uint16) * 257, ".png"),
        "png-16bit-gray": pil_bytes(Image.fromarray(bgr[..., 0].astype(np.uint16) * 257), "PNG"),
        "png-palette": pil_bytes(photo.convert("P"), "PNG"),
        "bmp": encode(bgr, ".bmp"),
        "webp": encode(bgr, ".webp"),
        "tiff": encode(bgr, ".tiff"),
    }


AWKWARD = _awkward()


@pytest.mark.parametrize("kind", AWKWARD)
def test_decode_is_opencv_inter_area_in_rgb_order(kind: str) -> None:
    # The reference: what cv2.imread + cv2.resize(INTER_AREA) + BGR → RGB would give.
    data = AWKWARD[kind]
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    expected = cv2.cvtColor(cv2.resize(bgr, (W, W), interpolation=cv2.INTER_AREA),
                            cv2.COLOR_BGR2RGB)
    out = decode_rgb(data, W)
    assert out.dtype == np.uint8 and out.shape == (W, W, 3)
    np.testing.assert_array_equal(out, expected)


def test_pure_red_comes_out_red() -> None:
    red = decode_rgb(encode(np.full((30, 40, 3), (0, 0, 255), np.uint8)), W)  # BGR red
    assert mean_rgb(red)[0] > 250 and mean_rgb(red)[1:].max() < 5


@pytest.mark.parametrize(("h", "w", "width"), [
    (375, 500, 299),  # the Kaggle photo: our kernels
    (598, 500, 299),  # an integer factor on one axis: our kernels (OpenCV's generic path too)
    (299, 500, 299),  # one axis unchanged: our kernels
    (299, 299, 299),  # unchanged: OpenCV's copy
    (100, 200, 299),  # enlarged: OpenCV
    (900, 1200, 300),  # integer factors on both axes: OpenCV's fast path
])
def test_resize_area_is_cv2_inter_area_byte_for_byte(h: int, w: int, width: int) -> None:
    rng = np.random.default_rng(h * w)
    for img in (rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                rng.choice(np.array([0, 255], np.uint8), (h, w, 3))):  # extremes: saturation
        expected = cv2.resize(img, (width, width), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(area.resize_area(img, width), expected)


@pytest.mark.parametrize("shape", [(375, 500), (375, 500, 1), (375, 500, 4)])
def test_resize_area_any_channel_count(shape: tuple[int, ...]) -> None:
    img = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    got = area.resize_area(img, 299)
    expected = cv2.resize(img, (299, 299), interpolation=cv2.INTER_AREA)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_resize_area_matches_on_random_sizes() -> None:
    rng = np.random.default_rng(0)
    ours = 0
    for _ in range(300):
        width = int(rng.integers(8, 48))
        h, w = (int(v) for v in rng.integers(width // 2, 4 * width, size=2))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        expected = cv2.resize(img, (width, width), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(area.resize_area(img, width), expected, f"{h}×{w}→{width}")
        ours += area._opencv_generic_path((w, h), (width, width))
    assert ours > 100  # most of the sizes went through our kernels, not cv2.resize


def test_area_table_weights_sum_to_one() -> None:
    # Each output pixel is a mean of the source pixels its cell covers.
    start, index, weight = area.area_table(500, 299)
    sums = np.add.reduceat(weight.astype(np.float64), start[:-1])
    np.testing.assert_allclose(sums, 1.0, atol=1e-6)
    assert index.min() == 0 and index.max() == 499 and np.all(np.diff(index) >= 0)


@pytest.mark.parametrize("kind", BAD)
def test_undecodable_bytes_give_the_reason(kind: str) -> None:
    data, reason = BAD[kind]
    with pytest.raises(BadImage, match=re.escape(reason)):
        decode_rgb(data, W)


def test_bytes_after_the_jpeg_end_marker_are_harmless() -> None:
    data = noisy_jpeg()
    np.testing.assert_array_equal(decode_rgb(data + bytes(100), W), decode_rgb(data, W))


# --- where a JPEG ends: motion photos, thumbnails, truncation ------------------------------------


def progressive_jpeg(seed: int = 0) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    data = pil_bytes(Image.fromarray(rgb), "JPEG", progressive=True)
    assert data.count(b"\xff\xda") > 2 and b"\xff\xc2" in data  # several scans, SOF2
    return data


def with_thumbnail(data: bytes) -> bytes:
    """The JPEG with a small whole JPEG inside a segment after its start, as EXIF keeps a
    thumbnail (here an APP15 segment, which decoders skip)."""
    thumb = noisy_jpeg(16, 12, seed=9)
    return data[:2] + b"\xff\xef" + struct.pack(">H", 2 + len(thumb)) + thumb + data[2:]


JPEGS = {"baseline": noisy_jpeg(), "progressive": progressive_jpeg(),
         "thumbnail": with_thumbnail(noisy_jpeg()),
         "progressive-thumbnail": with_thumbnail(progressive_jpeg())}


def random_trailer(seed: int) -> bytes:
    """Random bytes with an end-of-image marker, then a start-of-scan one and no 0xFF after it:
    what a search for the last scan took for the image's own."""
    rng = np.random.default_rng(seed)
    no_ff = rng.integers(0, 255, int(rng.integers(1, 300)), dtype=np.uint8).tobytes()
    before, between = (rng.bytes(int(n)) for n in rng.integers(0, 300, 2))
    return before + b"\xff\xd9" + between + b"\xff\xda" + no_ff


@pytest.mark.parametrize("kind", JPEGS)
@pytest.mark.parametrize("seed", range(5))
def test_bytes_after_the_end_of_image_are_ignored_whatever_they_hold(kind: str, seed: int) -> None:
    data = JPEGS[kind]
    photo = data + random_trailer(seed)
    assert headers.jpeg_end(photo) == len(data)
    np.testing.assert_array_equal(decode_rgb(photo, W), decode_rgb(data, W))


def test_a_motion_photo_decodes_as_its_still_image() -> None:
    data = JPEGS["baseline"]
    np.testing.assert_array_equal(decode_rgb(imagegen.motion_photo(data), W), decode_rgb(data, W))


def _cuts(data: bytes) -> dict[str, int]:
    """Where to cut a JPEG so that it lacks its end: each the length of the truncated file."""
    thumb_end = 4 + int.from_bytes(data[4:6]) if data[2:4] == b"\xff\xef" else 2
    scans = [m.start() for m in re.finditer(b"\xff\xda", data) if m.start() > thumb_end]
    return {"in-the-header": scans[0] - 6, "in-the-first-scan": scans[0] + 40,
            "before-the-last-scan": scans[-1], "in-the-last-scan": scans[-1] + 30,
            "without-its-end-marker": len(data) - 2, "half-its-end-marker": len(data) - 1}


@pytest.mark.parametrize("kind", JPEGS)
@pytest.mark.parametrize("cut", list(_cuts(JPEGS["baseline"])))
def test_a_truncated_jpeg_is_refused(kind: str, cut: str) -> None:
    data = JPEGS[kind]
    truncated = data[:_cuts(data)[cut]]
    assert headers.jpeg_end(truncated) is None
    with pytest.raises(BadImage, match="truncated JPEG"):
        decode_rgb(truncated, W)


def test_finding_the_end_is_fast_on_a_large_photo() -> None:
    # bytes.find skips the entropy-coded data at C speed (~2 ms here, for its ~10,000 stuffed
    # 0xFF bytes); a Python loop over each of its bytes takes ~0.3 s.
    data = noisy_jpeg(1600, 1200)
    assert len(data) > 2_000_000
    start = time.perf_counter()
    assert headers.jpeg_end(data + b"\x00" * 100) == len(data)
    assert time.perf_counter() - start < 0.05


def test_damaged_png_is_called_damaged() -> None:
    png = encode(np.zeros((30, 40, 3), np.uint8), ".png")
    with pytest.raises(BadImage, match="damaged PNG data"):
        decode_rgb(png[:60], W)


def test_grayscale_jpeg_becomes_three_equal_channels() -> None:
    out = decode_rgb(pil_bytes(Image.new("L", (40, 30), 128), "JPEG"), W)
    assert out.shape == (W, W, 3)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert abs(int(out[0, 0, 0]) - 128) <= 1


def test_cmyk_jpeg_keeps_its_colours() -> None:
    cmyk = Image.new("RGB", (40, 30), (255, 0, 0)).convert("CMYK")
    data = pil_bytes(cmyk, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    r, g, b = mean_rgb(decode_rgb(data, W))
    assert r > 245 and g < 10 and b < 10


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_png_is_scaled_to_8_bits(channels: int) -> None:
    value = 200 * 257  # 16-bit 200/255
    if channels == 1:
        data = pil_bytes(Image.fromarray(np.full((30, 40), value, np.uint16)), "PNG")
        assert Image.open(io.BytesIO(data)).mode == "I;16"
    else:
        data = encode(np.full((30, 40, 3), (value, 0, value // 2), np.uint16), ".png")
        assert data[24] == 16  # IHDR bit depth
    out = decode_rgb(data, W)
    assert out.dtype == np.uint8
    expected = (200, 200, 200) if channels == 1 else (100, 0, 200)  # RGB of the BGR above
    np.testing.assert_allclose(mean_rgb(out), expected, atol=1)


def test_png_alpha_is_dropped_colour_kept() -> None:
    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent: the colour stays, the transparency goes
    data = pil_bytes(Image.fromarray(rgba), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "RGBA"
    out = decode_rgb(data, W)
    assert out.shape == (W, W, 3)
    np.testing.assert_array_equal(mean_rgb(out), (255, 0, 0))


# Stored left half red, right half blue; where each half is after the EXIF orientation is applied.
@pytest.mark.parametrize(("orientation", "red_at"), [
    (1, "left"),    # as stored
    (3, "right"),   # rotated 180°
    (6, "top"),     # rotated 90° clockwise
    (8, "bottom"),  # rotated 90° counter-clockwise
])
def test_exif_orientation_is_applied(orientation: int, red_at: str) -> None:
    rgb = np.zeros((30, 60, 3), np.uint8)
    rgb[:, :30] = (255, 0, 0)
    rgb[:, 30:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = pil_bytes(Image.fromarray(rgb), "JPEG", exif=exif.tobytes(), quality=95)
    out = decode_rgb(data, W).astype(int)
    h = W // 2
    halves = {"left": out[:, :h], "right": out[:, h:], "top": out[:h], "bottom": out[h:]}
    red = halves[red_at].reshape(-1, 3).mean(axis=0)
    assert red[0] > 200 and red[2] < 60, (red_at, red)


def _claims_size(data: bytes, w: int, h: int) -> bytes:
    """The same file with a header that claims w×h pixels."""
    if data.startswith(b"\x89PNG"):
        return data[:16] + struct.pack(">II", w, h) + data[24:]
    sof = data.index(b"\xff\xc0")
    return data[:sof + 5] + struct.pack(">HH", h, w) + data[sof + 9:]


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_decompression_bomb_is_refused_before_decoding(ext: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = _claims_size(encode(np.zeros((30, 40, 3), np.uint8), ext), 50_000, 50_000)
    assert image_size(bomb) == (50_000, 50_000)

    def no_decoding(*_: object) -> None:
        raise AssertionError("the decoder was called: it would allocate 7.5 GB")

    monkeypatch.setattr(images.cv2, "imdecode", no_decoding)
    with pytest.raises(BadImage, match=r"claims 50000×50000 pixels.*refused without decoding"):
        decode_rgb(bomb, W)


def test_image_size_walks_jpeg_markers() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = pil_bytes(Image.new("RGB", (40, 30)), "JPEG", exif=exif.tobytes())
    assert image_size(data) == (40, 30)
    # Fill bytes and a stray restart marker before the frame header are legal; skip them.
    assert image_size(data[:2] + b"\xff\xff\xd0" + data[2:]) == (40, 30)
    assert image_size(encode(np.zeros((30, 40, 3), np.uint8), ".png")) == (40, 30)
    assert image_size(b"\xff\xd8\xff\xda\x00\x08" + bytes(20)) is None  # scan before frame
    assert image_size(HTML) is None


def _stage_process(code: str, data: bytes, limit: str | None) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh process that imports the stage first, as `python -m stages.resize` does
    (this one loaded cv2 before stages.images), with OPENCV_IO_MAX_IMAGE_PIXELS set or not."""
    env = {k: v for k, v in os.environ.items() if k != limits.ENV}
    env |= {limits.ENV: limit} if limit is not None else {}
    p = subprocess.run([sys.executable, "-c", "import stages.resize\n" + code], input=data,
                       cwd=REPO, env=env, capture_output=True)
    return subprocess.CompletedProcess(p.args, p.returncode, p.stdout.decode(), p.stderr.decode())


BMP_HEADER_SIZE = slice(18, 26)  # width, height: int32 little-endian


def test_opencv_backstop_holds_in_the_stage_process() -> None:
    # A BMP that claims one row more than the stage's default limit: its header is OpenCV's to
    # read, and the limit stages.limits gives OpenCV before cv2 loads must refuse it.
    code = ("import os, struct, sys\n"
            "from stages import limits\n"
            "from stages.images import decode_rgb, BadImage\n"
            "assert os.environ[limits.ENV] == str(limits.DEFAULT_PIXELS)\n"
            "bmp = bytearray(sys.stdin.buffer.read())\n"
            "bmp[18:26] = struct.pack('<ii', 20000, limits.DEFAULT_PIXELS // 20000 + 1)\n"
            "try: decode_rgb(bytes(bmp), 32)\n"
            "except BadImage as e: print(e)\n")
    p = _stage_process(code, encode(np.zeros((30, 40, 3), np.uint8), ".bmp"), None)
    assert p.returncode == 0, p.stderr
    assert "refused by the decoder" in p.stdout and "CV_IO_MAX_IMAGE_PIXELS" in p.stdout
    assert "set it higher to decode this image" in p.stdout


def test_the_users_opencv_limit_wins_in_both_guards() -> None:
    # 40×30 = 1,200 pixels, over the user's 1,000: our JPEG check and OpenCV's (for the BMP) agree.
    code = ("import sys\n"
            "from stages.images import decode_rgb, BadImage\n"
            "for data in sys.stdin.buffer.read().split(b'--next--'):\n"
            "    try: decode_rgb(data, 32)\n"
            "    except BadImage as e: print(e)\n")
    blank = np.zeros((30, 40, 3), np.uint8)
    p = _stage_process(code, encode(blank) + b"--next--" + encode(blank, ".bmp"), "1000")
    jpeg, bmp = p.stdout.splitlines()
    assert jpeg.startswith("claims 40×30 pixels, over the 1,000 that OPENCV_IO_MAX_IMAGE_PIXELS "
                           "allows; refused without decoding. To decode it, set "
                           "OPENCV_IO_MAX_IMAGE_PIXELS=1200 (or more)")
    assert "refused by the decoder" in bmp and "CV_IO_MAX_IMAGE_PIXELS" in bmp


@pytest.mark.parametrize("value", ["2GB", "1e9", "", " 5", "-5", "lots"])
def test_a_user_limit_opencv_cannot_read_stops_with_one_line(value: str) -> None:
    # OpenCV aborts the process on these (`terminate called …`) when cv2 loads.
    p = _stage_process("", b"", value)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == [
        f"stages: OPENCV_IO_MAX_IMAGE_PIXELS={value!r} is not a number of pixels; set it to "
        "a whole number, e.g. OPENCV_IO_MAX_IMAGE_PIXELS=200000000, or unset it"]


@pytest.mark.parametrize(("value", "pixels"), [
    ("200000000", 200_000_000), ("100MB", 100 << 20), ("64kb", 64 << 10), ("0", 0)])
def test_the_user_limit_is_read_as_opencv_reads_it(value: str, pixels: int) -> None:
    assert limits.user_limit({limits.ENV: value}) == pixels
    assert limits.user_limit({}) is None


def test_pixel_limit_is_a_share_of_memory_split_among_workers() -> None:
    gb = 10**9
    per_pixel = limits.BYTES_PER_PIXEL / limits.MEMORY_SHARE
    for workers, avail in [(1, 8 * gb), (4, 16 * gb), (16, 64 * gb), (3, 12_345_678_901)]:
        limit = limits.pixel_limit(workers, avail)
        assert limit * workers * per_pixel <= avail < (limit + 1) * workers * per_pixel
    # A 200 MP photo (16,320×12,240): 4 workers on 16 GB take it, 8 do not; 1 worker on 8 GB does.
    assert limits.pixel_limit(4, 16 * gb) >= 200e6 > limits.pixel_limit(8, 16 * gb)
    assert limits.pixel_limit(1, 8 * gb) >= 200e6
    assert limits.pixel_limit(1, 10**15) == limits.OPENCV_DEFAULT == 2**30  # never above OpenCV's
    assert limits.pixel_limit(64, 1000) == 1


def test_the_limit_follows_the_memory_and_the_users_setting(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    avail = limits.available_memory()
    assert 0 < avail <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    monkeypatch.setattr(limits, "USER_PIXELS", None)
    monkeypatch.setattr(limits, "available_memory", lambda: 40 * 10**9)
    assert limits.max_pixels(2) == limits.pixel_limit(2, 40 * 10**9)
    monkeypatch.setattr(limits, "USER_PIXELS", 1234)
    assert limits.max_pixels(1) == limits.max_pixels(64) == 1234


def test_the_refusal_says_the_limit_why_and_how_to_raise_it(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setattr(limits, "USER_PIXELS", None)
    data = encode(np.zeros((30, 40, 3), np.uint8))
    with pytest.raises(BadImage) as e:
        decode_rgb(data, W, max_pixels=1199)
    assert str(e.value) == (
        f"claims 40×30 pixels, over the 1,199-pixel limit that keeps the workers, each decoding "
        f"one such image (~{limits.BYTES_PER_PIXEL} bytes a pixel), within 50% of the memory "
        "available (a decompression bomb or a huge scan would exhaust it); refused without "
        "decoding. To decode it, set OPENCV_IO_MAX_IMAGE_PIXELS=1200 (or more) in the "
        "environment, or use fewer --workers")
    assert decode_rgb(data, W, max_pixels=1200).shape == (W, W, 3)


# --- parallel_map -------------------------------------------------------------------------------


def _odd_is_bad(x: str) -> str:
    if int(x) % 2:
        raise BadImage(f"{x} is odd")
    return x * 2


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_parallel_map_keeps_order_and_returns_failures(workers: int) -> None:
    items = [str(i) for i in range(300)]
    out = list(parallel_map(_odd_is_bad, items, workers, chunk=7))
    assert [o for o in out if isinstance(o, str)] == [x * 2 for x in items[::2]]
    assert [str(o) for o in out if isinstance(o, BadImage)] == [f"{x} is odd" for x in items[1::2]]


def test_parallel_map_lets_bugs_through() -> None:
    def bug(x: str) -> str:
        raise KeyError(x)  # a bug in our code is not a bad image: it must not be skipped

    with pytest.raises(KeyError):
        list(parallel_map(bug, ["1"], 2))


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_parallel_map_holds_bounded_work_in_flight(workers: int) -> None:
    pulled = 0

    def source() -> Iterator[str]:
        nonlocal pulled
        for i in range(2000):
            pulled += 1
            yield str(i)

    ahead = []
    for consumed, _ in enumerate(parallel_map(str.upper, source(), workers, chunk=5), 1):
        ahead.append(pulled - consumed)
    assert consumed == 2000
    assert max(ahead) <= 4 * workers * 5  # never more than 4 chunks per worker read ahead
