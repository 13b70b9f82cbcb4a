"""stages/images.py: names and layouts, and decoding every kind of awkward file, each one real.

The awkward files are made here, at test time, with OpenCV and Pillow; `BAD` (undecodable bytes
and the reason each must give) is shared with test_resize.py.
"""

from __future__ import annotations

import io
import re
import struct
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from stages import area, h5io, images
from stages.images import (
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


@pytest.mark.parametrize(("names", "prefix", "rel"), [
    (["cat.0.jpg", "dog.0.jpg"], "", ["cat.0.jpg", "dog.0.jpg"]),
    (["train/cat.0.jpg", "train/dog.0.jpg"], "train/", ["cat.0.jpg", "dog.0.jpg"]),
    (["a/b/cat.0.jpg", "a/b/dog.0.jpg"], "a/b/", ["cat.0.jpg", "dog.0.jpg"]),
    (["PetImages/Cat/1.jpg", "PetImages/Dog/1.jpg"], "PetImages/", ["Cat/1.jpg", "Dog/1.jpg"]),
    (["Cat/1.jpg", "Cat/2.jpg"], "", ["Cat/1.jpg", "Cat/2.jpg"]),  # one class stays one class
])
def test_strip_common_top(names: list[str], prefix: str, rel: list[str]) -> None:
    assert strip_common_top(names) == (prefix, rel)


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
    write(tmp_path, {**dict.fromkeys(["10.jpg", "2.JPG", "1.png", "sub/3.jpeg"], b""), **LITTER})
    listing = list_test(Source(tmp_path))
    assert listing.ids == [1, 2, 3, 10]
    assert listing.files == ["1.png", "2.JPG", "sub/3.jpeg", "10.jpg"]
    assert len(listing.ignored) == len(LITTER)


def test_duplicate_test_ids_are_all_named(tmp_path: Path) -> None:
    write(tmp_path, dict.fromkeys(["1.jpg", "1.png", "01.jpeg", "2.jpg"], b""))
    with pytest.raises(DataError, match=r"duplicate test ids: 1: 01\.jpeg, 1\.jpg, 1\.png\."):
        list_test(Source(tmp_path))


def test_test_names_that_do_not_parse_are_all_named(tmp_path: Path) -> None:
    long = "1" * 19 + ".jpg"
    write(tmp_path, dict.fromkeys(["abc.jpg", "1.jpg", "cat.2.jpg", long], b""))
    with pytest.raises(DataError, match=rf"3 test image name\(s\).*{long}, abc\.jpg, cat\.2\.jpg"):
        list_test(Source(tmp_path))


def test_labelled_test_set_labels_by_the_training_classes(tmp_path: Path) -> None:
    names = ["test/Dog/1.jpg", "test/Cat/10.jpg", "test/Cat/2.JPG", "test/Dog/sub/4.jpg"]
    write(tmp_path, {**dict.fromkeys(names, b""), "test/Cat/Thumbs.db": b"x"})
    listing = list_test(Source(tmp_path), ["Bird", "Cat", "Dog"])  # no Bird in the test set
    assert listing.names == ["Cat/2.JPG", "Cat/10.jpg", "Dog/1.jpg", "Dog/sub/4.jpg"]
    assert listing.labels == [1, 1, 2, 2]
    assert listing.classes == ["Bird", "Cat", "Dog"]
    assert listing.ids == [0, 1, 2, 3]
    assert listing.ignored == ["test/Cat/Thumbs.db"]


def test_a_labelled_test_set_may_hold_one_class(tmp_path: Path) -> None:
    write(tmp_path, dict.fromkeys(["dog/1.jpg", "dog/2.jpg"], b""))
    listing = list_test(Source(tmp_path), ["cat", "dog"])
    assert listing.labels == [1, 1] and listing.names == ["dog/1.jpg", "dog/2.jpg"]


def test_a_test_class_that_training_lacks_is_named(tmp_path: Path) -> None:
    write(tmp_path, dict.fromkeys(["Cat/1.jpg", "Horse/2.jpg", "Zebra/3.jpg"], b""))
    with pytest.raises(DataError, match=r"test folder\(s\) Horse, Zebra are not training "
                                        r"classes \(Cat, Dog\)"):
        list_test(Source(tmp_path), ["Cat", "Dog"])


def test_kaggle_test_ids_inside_a_top_folder_stay_unlabelled(tmp_path: Path) -> None:
    src = Source(zip_of(tmp_path / "test.zip", {"test/2.jpg": b"", "test/10.jpg": b""}))
    listing = list_test(src, ["cat", "dog"])
    assert listing.ids == [2, 10] and listing.labels == []


def test_class_folders_beside_loose_test_images_are_an_error(tmp_path: Path) -> None:
    write(tmp_path, dict.fromkeys(["Cat/1.jpg", "Dog/2.jpg", "3.jpg"], b""))
    with pytest.raises(DataError, match=r"mixes images at the top level.*loose images: 3\.jpg"):
        list_test(Source(tmp_path), ["Cat", "Dog"])


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


def test_opencv_backstop_holds_in_the_stage_process() -> None:
    # A BMP that claims 9000×9000 (81 MP): its header is OpenCV's to read, and the limit that
    # stages.images sets before cv2 loads must refuse it. Run fresh: this process loaded cv2 first.
    bmp = bytearray(encode(np.zeros((30, 40, 3), np.uint8), ".bmp"))
    bmp[18:26] = struct.pack("<ii", 9000, 9000)
    code = ("import sys, stages.resize; from stages.images import decode_rgb, BadImage\n"
            "try: decode_rgb(sys.stdin.buffer.read(), 32)\n"
            "except BadImage as e: print(e)\n")
    p = subprocess.run([sys.executable, "-c", code], input=bytes(bmp), cwd=REPO,
                       capture_output=True, check=True)
    assert b"refused by the decoder" in p.stdout and b"CV_IO_MAX_IMAGE_PIXELS" in p.stdout


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
