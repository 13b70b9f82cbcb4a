"""stages/decode.py (with headers.py, limits.py and area.py): decoding every kind of awkward file,
each one real and made here at test time; where a JPEG ends; the pixel limit, ours and OpenCV's.
"""

from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import cv2
import imagegen
import numpy as np
import pytest
from PIL import Image
from test_images import BAD, HTML, encode, noisy_jpeg, pil_bytes, write, zip_of

from stages import area, decode, headers, limits
from stages.decode import BadImage, decode_rgb
from stages.headers import image_size
from stages.images import Source, list_train

REPO = Path(__file__).resolve().parents[1]
W = 32  # output side: tiny keeps the tests fast


def mean_rgb(img: np.ndarray) -> np.ndarray:
    return img.reshape(-1, 3).mean(axis=0)


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
def test_16_bit_png_is_mapped_by_its_own_range(channels: int) -> None:
    value = 200 * 257  # 16-bit 200/255
    if channels == 1:  # one value: no range of its own, it keeps its place in 16 bits
        data = pil_bytes(Image.fromarray(np.full((30, 40), value, np.uint16)), "PNG")
        assert Image.open(io.BytesIO(data)).mode == "I;16"
    else:  # one range for the three channels: 0 → 0, value → 255, value / 2 → 127.5
        data = encode(np.full((30, 40, 3), (value, 0, value // 2), np.uint16), ".png")
        assert data[24] == 16  # IHDR bit depth
    out = decode_rgb(data, W)
    assert out.dtype == np.uint8
    expected = (200, 200, 200) if channels == 1 else (128, 0, 255)  # RGB of the BGR above
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

    monkeypatch.setattr(decode.cv2, "imdecode", no_decoding)
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


def _stage_process(code: str, data: bytes, limit: str | None, first: str = ""
                   ) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh process that imports the stage first, as `python -m stages.resize` does
    (this one loaded cv2 before stages.decode), with OPENCV_IO_MAX_IMAGE_PIXELS set or not;
    `first` runs before that import."""
    env = {k: v for k, v in os.environ.items() if k != limits.ENV}
    env |= {limits.ENV: limit} if limit is not None else {}
    p = subprocess.run([sys.executable, "-c", first + "import stages.resize\n" + code],
                       input=data, cwd=REPO, env=env, capture_output=True)
    return subprocess.CompletedProcess(p.args, p.returncode, p.stdout.decode(), p.stderr.decode())


BMP_HEADER_SIZE = slice(18, 26)  # width, height: int32 little-endian


def test_opencv_backstop_holds_in_the_stage_process() -> None:
    # A BMP that claims one row more than the stage's default limit: its header is OpenCV's to
    # read, and the limit stages.limits gives OpenCV before cv2 loads must refuse it.
    code = ("import os, struct, sys\n"
            "from stages import limits\n"
            "from stages.decode import decode_rgb, BadImage\n"
            "assert os.environ[limits.ENV] == str(limits.DEFAULT_PIXELS)\n"
            "bmp = bytearray(sys.stdin.buffer.read())\n"
            "bmp[18:26] = struct.pack('<ii', 20000, limits.DEFAULT_PIXELS // 20000 + 1)\n"
            "try: decode_rgb(bytes(bmp), 32)\n"
            "except BadImage as e: print(e)\n")
    p = _stage_process(code, encode(np.zeros((30, 40, 3), np.uint8), ".bmp"), None)
    assert p.returncode == 0, p.stderr
    assert "refused by the decoder" in p.stdout and "CV_IO_MAX_IMAGE_PIXELS" in p.stdout
    assert "set it higher to decode this image" in p.stdout


def test_one_worker_does_not_pass_what_opencv_refuses() -> None:
    # 64 cores make the default limit (OpenCV's, set before cv2 loads) far below what memory
    # allows one worker: a PNG between the two is refused by our header check, in our words,
    # and not passed on to OpenCV, whose limit a run cannot change.
    many_cores = "import os\nos.sched_getaffinity = lambda pid: set(range(64))\n"
    code = ("import sys, struct, zlib\n"
            "from stages import limits\n"
            "from stages.decode import decode_rgb, BadImage\n"
            "w, h = 20000, limits.DEFAULT_PIXELS // 20000 + 1\n"
            "assert limits.DEFAULT_PIXELS < w * h <= limits.pixel_limit(1, "
            "limits.available_memory())\n"
            "png = sys.stdin.buffer.read()\n"
            "ihdr = png[12:16] + struct.pack('>II', w, h) + png[24:29]\n"  # with its CRC
            "png = png[:12] + ihdr + struct.pack('>I', zlib.crc32(ihdr)) + png[33:]\n"
            "try: decode_rgb(png, 32, limits.max_pixels(1))\n"
            "except BadImage as e: print(e)\n")
    p = _stage_process(code, encode(np.zeros((30, 40, 3), np.uint8), ".png"), None, many_cores)
    assert p.returncode == 0, p.stderr
    assert re.match(r"claims 20000×\d+ pixels, over the [\d,]+-pixel limit .* refused without "
                    r"decoding\. To decode it, set OPENCV_IO_MAX_IMAGE_PIXELS=\d+", p.stdout), \
        p.stdout
    assert "fewer --workers" not in p.stdout


def test_the_users_opencv_limit_wins_in_both_guards() -> None:
    # 40×30 = 1,200 pixels, over the user's 1,000: our JPEG check and OpenCV's (for the BMP) agree.
    code = ("import sys\n"
            "from stages.decode import decode_rgb, BadImage\n"
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
    monkeypatch.setattr(limits, "DEFAULT_PIXELS", limits.OPENCV_DEFAULT)
    monkeypatch.setattr(limits, "available_memory", lambda: 40 * 10**9)
    assert limits.max_pixels(2) == limits.pixel_limit(2, 40 * 10**9)
    # Never above the limit OpenCV loaded with: fewer workers than the default do not raise it.
    monkeypatch.setattr(limits, "DEFAULT_PIXELS", 10**6)
    assert limits.max_pixels(1) == 10**6 and limits.max_pixels(2) == 10**6
    assert limits.max_pixels(10**5) == limits.pixel_limit(10**5, 40 * 10**9) < 10**6
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
        "environment")
    assert decode_rgb(data, W, max_pixels=1200).shape == (W, W, 3)


# --- more than 8 bits a sample: 16-bit PNG and TIFF, float, DICOM --------------------------------


def xray(h: int = 48, w: int = 64) -> np.ndarray:
    """An 8-bit grayscale 'X-ray': a dark field, a bright oval 'bone' with a darker core, noise.
    Its values span 0..255 nowhere exactly, as a real film's do not."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    bone = ((x - w / 2) / (w / 3)) ** 2 + ((y - h / 2) / (h / 2.5)) ** 2 < 1
    core = ((x - w / 2) / (w / 8)) ** 2 + ((y - h / 2) / (h / 4)) ** 2 < 1
    img = 30 + 40 * y / h + 150 * bone - 60 * core
    img += np.random.default_rng(7).normal(0, 6, (h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


XRAY = xray()
TWELVE_BIT = XRAY.astype(np.uint16) * 16 + 8  # the same picture in 12 bits (8..4088)
SIGNED = TWELVE_BIT.astype(np.int16) - 2048  # stored signed; RescaleSlope 2, Intercept -1000:
MODALITY = 2 * SIGNED.astype(np.int32) - 1000  # the modality values a viewer's window sees


def assert_same_picture(out: np.ndarray, reference: np.ndarray = XRAY) -> None:
    """`out` is the 8-bit reference's decode up to an affine map of its values (a*x + b, a > 0:
    the same contrast, not inverted), within 2 levels of rounding; grayscale stays gray."""
    assert out.shape == (W, W, 3) and out.dtype == np.uint8
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    x = decode_rgb(encode(reference, ".png"), W)[..., 0].astype(np.float64).ravel()
    y = out[..., 0].astype(np.float64).ravel()
    a, b = np.polyfit(x, y, 1)
    assert 0.9 < a < 1.2, (a, b)  # near the reference's contrast: stretched to the full range
    assert np.abs(a * x + b - y).max() <= 2, (a, b)


def _dicom(pixels: np.ndarray, syntax: str = "", **kw: object) -> bytes:
    """imagegen.dicom, the transfer syntax by a short name: what pydicom compresses to here."""
    from pydicom.uid import JPEG2000Lossless, RLELossless
    uid = {"": "", "rle": RLELossless, "j2k": JPEG2000Lossless}[syntax]
    return imagegen.dicom(pixels, syntax=uid, **kw)  # type: ignore[arg-type]


HIGH_DEPTH = {
    "png-16bit": lambda: encode(TWELVE_BIT, ".png"),
    "tiff-16bit": lambda: encode(TWELVE_BIT, ".tiff"),
    "dicom-monochrome2": lambda: _dicom(TWELVE_BIT, bits_stored=12),
    "dicom-monochrome1": lambda: _dicom(4095 - TWELVE_BIT, photometric="MONOCHROME1",
                                        bits_stored=12),
    "dicom-rescale": lambda: _dicom(SIGNED, RescaleSlope=2, RescaleIntercept=-1000),
    # The window covers the modality values' range: a window on the stored values, or one that
    # ignored the rescale, would clip most of the picture.
    "dicom-window": lambda: _dicom(SIGNED, RescaleSlope=2, RescaleIntercept=-1000,
                                   WindowCenter=(MODALITY.min() + MODALITY.max()) / 2 + 0.5,
                                   WindowWidth=MODALITY.max() - MODALITY.min() + 1),
    # Presentation LUT Shape INVERSE: inverted as a viewer shows it; with MONOCHROME1, once.
    "dicom-monochrome2-inverse": lambda: _dicom(4095 - TWELVE_BIT, bits_stored=12,
                                                PresentationLUTShape="INVERSE"),
    "dicom-monochrome1-inverse": lambda: _dicom(4095 - TWELVE_BIT, photometric="MONOCHROME1",
                                                bits_stored=12, PresentationLUTShape="INVERSE"),
    "dicom-monochrome2-identity": lambda: _dicom(TWELVE_BIT, bits_stored=12,
                                                 PresentationLUTShape="IDENTITY"),
    "dicom-rle-lossless": lambda: _dicom(TWELVE_BIT, bits_stored=12, syntax="rle"),
    "dicom-jpeg2000-lossless": lambda: _dicom(TWELVE_BIT, bits_stored=12, syntax="j2k"),
}


@pytest.mark.parametrize("kind", HIGH_DEPTH)
def test_more_than_8_bits_is_the_same_picture_as_8(kind: str) -> None:
    data = HIGH_DEPTH[kind]()
    assert_same_picture(decode_rgb(data, W))


def test_a_dicom_window_clips_what_it_leaves_out() -> None:
    # A window over the darker half of the values: the brighter half all comes out white.
    lo, mid = int(MODALITY.min()), int(np.median(MODALITY))
    data = _dicom(SIGNED, RescaleSlope=2, RescaleIntercept=-1000,
                  WindowCenter=(lo + mid) / 2, WindowWidth=mid - lo)
    full, windowed = decode_rgb(_dicom(SIGNED), W)[..., 0], decode_rgb(data, W)[..., 0]
    assert (full == 255).mean() < 0.02 and (windowed >= 254).mean() > 0.4


def test_a_jpeg_baseline_dicom_decodes() -> None:
    from pydicom.uid import JPEGBaseline8Bit
    jpeg = encode(XRAY, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 100)
    data = imagegen.encapsulated_dicom(jpeg, JPEGBaseline8Bit, *XRAY.shape)
    assert_same_picture(decode_rgb(data, W))


def test_a_dicom_file_without_its_header_is_read_by_its_name() -> None:
    data = _dicom(TWELVE_BIT, bits_stored=12)
    bare = data[data.index(b"\x08\x00", 132 + 12):]  # no preamble, no file meta: a bare data set
    assert not bare.startswith(b"\x02\x00") and b"DICM" not in bare[:200]
    with pytest.raises(BadImage, match="not an image"):
        decode_rgb(bare, W)  # by its bytes it is nothing known
    assert_same_picture(decode_rgb(bare, W, dicom_name=True))


@pytest.mark.parametrize("syntax", ["", "rle"])
def test_a_colour_dicom_stays_colour(syntax: str) -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    expected = decode_rgb(encode(rgb[..., ::-1], ".png"), W)
    np.testing.assert_array_equal(decode_rgb(_dicom(rgb, photometric="RGB",
                                                    syntax=syntax), W), expected)


def test_a_multiframe_dicom_gives_its_first_frame() -> None:
    frames = np.stack([TWELVE_BIT, 4095 - TWELVE_BIT])
    assert_same_picture(decode_rgb(_dicom(frames, bits_stored=12), W))


# --- DICOM as a viewer shows it: pydicom's modality and VOI LUTs are the reference -------------

# Every 4th 12-bit value, one a pixel, W × W: decode_rgb does not resize it, so every value is
# compared. HU: CT's rescale to Hounsfield units, the modality values -1024..3071.
RAMP = (np.arange(W * W, dtype=np.uint16) * 4).reshape(W, W)
HU = {"RescaleSlope": 1, "RescaleIntercept": -1024}
HU_RANGE = (-1024.0, 3071.0)


def _item(**tags: object) -> object:
    """A sequence item (a pydicom Dataset) with `tags`."""
    from pydicom.dataset import Dataset
    item = Dataset()
    for keyword, value in tags.items():
        setattr(item, keyword, value)
    return item


def _lut(bits: int, data: np.ndarray) -> object:
    """A Modality or VOI LUT item: `data` for the stored values from 0, `bits` an entry."""
    return _item(LUTDescriptor=[len(data), 0, bits], LUTData=data.astype("<u2").tobytes())


def _enhanced(shared: dict[str, object], first: dict[str, object], second: dict[str, object]
              ) -> dict[str, object]:
    """Functional groups as an enhanced multi-frame object keeps them (PS3.3 C.7.6.16): each
    dict's macros (keyword: the macro's tags), shared by both frames, or the first's or the
    second's own."""
    def group(macros: dict[str, object]) -> object:
        return _item(**{macro: [_item(**tags)] for macro, tags in macros.items()})  # type: ignore[arg-type]

    return {"SharedFunctionalGroupsSequence": [group(shared)],
            "PerFrameFunctionalGroupsSequence": [group(first), group(second)]}


class Shown(NamedTuple):
    """A DICOM file written with `tags` and `pixels` (`bits` of each stored), and how pydicom
    shows its first frame: as a classic file with `classic` tags (None: the same tags), the VOI's
    output range `out_range` from black to white."""

    tags: dict[str, object]
    out_range: tuple[float, float]
    photometric: str = "MONOCHROME2"
    classic: dict[str, object] | None = None
    pixels: np.ndarray = RAMP
    bits: int = 12  # BitsStored


VIEWER = {
    # A 12-bit table of 1000..3047: about 62..190 of 255, not stretched to the frame's range.
    "voi-lut-table": lambda: Shown({"VOILUTSequence": [_lut(12, 1000 + np.arange(4096) // 2)]},
                                   (0.0, 4095.0)),
    "voi-lut-table-monochrome1": lambda: Shown(
        {"VOILUTSequence": [_lut(12, 1000 + np.arange(4096) // 2)]}, (0.0, 4095.0),
        "MONOCHROME1"),
    "voi-lut-table-8-bit-samples": lambda: Shown(
        {"VOILUTSequence": [_lut(10, 200 + 2 * np.arange(256))]}, (0.0, 1023.0),
        pixels=(RAMP // 16).astype(np.uint8), bits=8),
    # A curved modality table, then a window: the window's output range is black to white.
    "modality-lut-table-and-window": lambda: Shown(
        {"ModalityLUTSequence": [_lut(16, np.arange(4096) ** 2 // 256)],
         "WindowCenter": 30000, "WindowWidth": 80000}, (0.0, 65535.0)),
    "sigmoid-window": lambda: Shown({**HU, "WindowCenter": 40, "WindowWidth": 4000,
                                     "VOILUTFunction": "SIGMOID"}, HU_RANGE),
    "sigmoid-window-monochrome1": lambda: Shown(
        {**HU, "WindowCenter": 1000, "WindowWidth": 6000, "VOILUTFunction": "SIGMOID"},
        HU_RANGE, "MONOCHROME1"),
    "sigmoid-window-signed-samples": lambda: Shown(
        {"RescaleSlope": 2, "RescaleIntercept": -1000, "WindowCenter": -500,
         "WindowWidth": 5000, "VOILUTFunction": "SIGMOID"}, (-5096.0, 3094.0),
        pixels=RAMP.astype(np.int16) - 2048),
    # pydicom's output range runs from 3071 down to -1024 here: its black is still the low end.
    "sigmoid-window-negative-slope": lambda: Shown(
        {"RescaleSlope": -1, "RescaleIntercept": 3071, "WindowCenter": 1000,
         "WindowWidth": 3000, "VOILUTFunction": "SIGMOID"}, (3071.0, -1024.0)),
    "linear-window-of-width-1": lambda: Shown({**HU, "WindowCenter": 1000, "WindowWidth": 1},
                                              HU_RANGE),
    "linear-window": lambda: Shown({**HU, "WindowCenter": 40, "WindowWidth": 400}, HU_RANGE),
    "linear-exact-window": lambda: Shown({**HU, "WindowCenter": 40.5, "WindowWidth": 399.5,
                                          "VOILUTFunction": "LINEAR_EXACT"}, HU_RANGE),
    # An enhanced CT: the rescale and a 40/400 window shared by its frames.
    "enhanced-shared-groups": lambda: Shown(
        _enhanced({"PixelValueTransformationSequence": HU,
                   "FrameVOILUTSequence": {"WindowCenter": 40, "WindowWidth": 400}}, {}, {}),
        HU_RANGE, classic={**HU, "WindowCenter": 40, "WindowWidth": 400}),
    # Each frame its own window, the first a sigmoid; a stale top-level window is not the
    # frame's.
    "enhanced-per-frame-groups": lambda: Shown(
        {**_enhanced({"PixelValueTransformationSequence": HU},
                     {"FrameVOILUTSequence": {"WindowCenter": 300, "WindowWidth": 1500,
                                              "VOILUTFunction": "SIGMOID"}},
                     {"FrameVOILUTSequence": {"WindowCenter": 40, "WindowWidth": 400}}),
         "WindowCenter": 2000, "WindowWidth": 4000},
        HU_RANGE, classic={**HU, "WindowCenter": 300, "WindowWidth": 1500,
                           "VOILUTFunction": "SIGMOID"}),
    "enhanced-per-frame-voi-lut-table": lambda: Shown(
        _enhanced({}, {"FrameVOILUTSequence": {
            "VOILUTSequence": [_lut(12, 1000 + np.arange(4096) // 2)]}}, {}),
        (0.0, 4095.0), classic={"VOILUTSequence": [_lut(12, 1000 + np.arange(4096) // 2)]}),
}


def _as_pydicom_shows(case: Shown) -> np.ndarray:
    """The case's first frame in a classic file, through pydicom's apply_modality_lut and
    apply_voi_lut, the VOI's output range scaled to 0..255, reversed for MONOCHROME1."""
    from pydicom import dcmread
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
    tags = case.tags if case.classic is None else case.classic
    ds = dcmread(io.BytesIO(imagegen.dicom(case.pixels, case.photometric, case.bits, **tags)))
    shown = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    lo, hi = case.out_range
    out = np.clip((shown - lo) * 255 / (hi - lo), 0, 255)
    return 255 - out if case.photometric == "MONOCHROME1" else out


@pytest.mark.parametrize("name", VIEWER)
def test_dicom_shows_as_pydicoms_modality_and_voi_luts(name: str) -> None:
    case = VIEWER[name]()
    # Enhanced: two frames, the second another picture.
    frames = case.pixels if case.classic is None else np.stack([case.pixels, case.pixels[::-1]])
    out = decode_rgb(imagegen.dicom(frames, case.photometric, case.bits, **case.tags), W)
    assert (out == out[..., :1]).all()
    expected = _as_pydicom_shows(case)
    assert expected.max() - expected.min() > 60  # a picture, not a blank
    np.testing.assert_allclose(out[..., 0], expected, atol=1)


@pytest.mark.parametrize("name", ["voi-lut-table", "voi-lut-table-8-bit-samples",
                                  "modality-lut-table-and-window", "sigmoid-window",
                                  "linear-window", "linear-window-of-width-1"])
def test_presentation_lut_shape_inverse_inverts_what_the_voi_shows(name: str) -> None:
    """INVERSE inverts the VOI's output (PS3.3 C.11.6) on every path (a window, a table, a
    threshold): a MONOCHROME2 file shows as the same file in MONOCHROME1, and MONOCHROME1 with
    INVERSE is inverted once."""
    case = VIEWER[name]()

    def shown(photometric: str, **shape: str) -> np.ndarray:
        return decode_rgb(imagegen.dicom(case.pixels, photometric, case.bits, **case.tags,
                                         **shape), W)

    monochrome1 = shown("MONOCHROME1")
    assert not np.array_equal(monochrome1, shown("MONOCHROME2"))
    np.testing.assert_array_equal(shown("MONOCHROME2", PresentationLUTShape="INVERSE"),
                                  monochrome1)
    np.testing.assert_array_equal(shown("MONOCHROME1", PresentationLUTShape="INVERSE"),
                                  monochrome1)


def _truncated(data: bytes) -> bytes:
    return data[:-500]


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns; the stage filters it out
@pytest.mark.parametrize(("kind", "damage"), [
    ("uncompressed", _truncated),
    ("rle", _truncated),
    ("garbage-after-the-preamble",
     lambda d: d[:132] + np.random.default_rng(0).bytes(len(d) - 132)),
])
def test_a_damaged_dicom_is_skipped_with_the_reason(kind: str, damage: object) -> None:
    data = _dicom(TWELVE_BIT, bits_stored=12, syntax="rle" if kind == "rle" else "")
    with pytest.raises(BadImage, match="damaged DICOM data"):
        decode_rgb(damage(data), W)  # type: ignore[operator]


def test_a_transfer_syntax_nothing_decodes_is_named() -> None:
    from pydicom.uid import MPEG4HP41
    data = imagegen.encapsulated_dicom(b"\x00\x00\x01\xb3" + bytes(100), MPEG4HP41, 48, 64)
    with pytest.raises(BadImage, match=re.escape(
            "DICOM transfer syntax MPEG-4 AVC/H.264 High Profile / Level 4.1 "
            "(1.2.840.10008.1.2.4.102): pydicom decodes no pixel data in it")):
        decode_rgb(data, W)


def test_a_missing_decoder_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    # As where the lock's pylibjpeg is not installed: pydicom's own list of what would decode it.
    from pydicom.pixels.decoders.base import Decoder
    monkeypatch.setattr(Decoder, "is_available", property(lambda self: False))
    monkeypatch.setattr(Decoder, "missing_dependencies", property(
        lambda self: ["pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-openjpeg>=2.0"]))
    data = _dicom(TWELVE_BIT, bits_stored=12, syntax="j2k")
    with pytest.raises(BadImage, match=re.escape(
            "DICOM transfer syntax JPEG 2000 Image Compression (Lossless Only) "
            "(1.2.840.10008.1.2.4.90): no installed package decodes it; install one of: "
            "pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-openjpeg>=2.0")):
        decode_rgb(data, W)


def test_the_lock_decodes_the_common_compressed_dicom_syntaxes() -> None:
    # The JPEG and JPEG-LS ones that no package here can write are checked by their decoders.
    from pydicom import uid
    from pydicom.pixels import get_decoder
    for syntax in (uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLossless,
                   uid.JPEGLosslessSV1, uid.JPEGLSLossless, uid.JPEGLSNearLossless,
                   uid.JPEG2000Lossless, uid.JPEG2000, uid.HTJ2KLossless, uid.HTJ2K,
                   uid.RLELossless, uid.DeflatedExplicitVRLittleEndian):
        assert get_decoder(syntax).is_available, syntax.name


def test_dicom_rows_and_columns_are_checked_before_decoding(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    def no_decoding(*_: object) -> None:
        raise AssertionError("the pixel data was decoded")

    monkeypatch.setattr(decode.dicom, "_first_frame", no_decoding)
    with pytest.raises(BadImage, match=r"claims 64×48 pixels, over the 3,071-pixel limit"):
        decode_rgb(_dicom(TWELVE_BIT, bits_stored=12), W, max_pixels=3071)


@pytest.mark.parametrize("packed", ["folder", "zip"])
def test_extensionless_dicom_files_are_listed_and_decoded(tmp_path: Path, packed: str) -> None:
    files = {"Cat/IM0001": _dicom(TWELVE_BIT, bits_stored=12),
             "Cat/1.2.840.113619.2.5": _dicom(4095 - TWELVE_BIT,
                                              photometric="MONOCHROME1", bits_stored=12),
             "Cat/DICOMDIR": imagegen.dicom(np.zeros((2, 2), np.uint8)),  # an index, no image
             "Cat/README": b"scanned 2024" * 20, "Dog/1.jpg": noisy_jpeg()}
    root = write(tmp_path / "train", files) if packed == "folder" else zip_of(
        tmp_path / "train.zip", files)
    source = Source(root)
    listing = list_train(source)
    assert listing.files == ["Cat/1.2.840.113619.2.5", "Cat/IM0001", "Dog/1.jpg"]
    assert listing.ignored == ["Cat/DICOMDIR", "Cat/README"]
    for name in listing.files[:2]:
        assert_same_picture(decode.load_rgb(source, name, W))


def test_a_float_pfm_in_0_1_is_its_picture_times_255() -> None:
    # A gradient: OpenCV's own cast to 8 bits made it 0s and 1s (black).
    h, w = 48, 64
    rgb = np.empty((h, w, 3), np.float32)
    rgb[..., 0] = np.linspace(0, 1, w)[None, :]
    rgb[..., 1] = np.linspace(0, 1, h)[:, None]
    rgb[..., 2] = 0.5
    expected = decode_rgb(encode(np.rint(rgb[..., ::-1] * 255).astype(np.uint8), ".png"), W)
    np.testing.assert_allclose(decode_rgb(encode(rgb[..., ::-1], ".pfm"), W), expected, atol=1)
    # Radiance HDR brighter than 1: by its own range (RGBE keeps ~1% of each value).
    np.testing.assert_allclose(decode_rgb(encode(4 * rgb[..., ::-1], ".hdr"), W), expected,
                               atol=3)


# Every sample type OpenCV writes to TIFF, made from an 8-bit picture `p`; `True`: mapped by its
# own range (its least value black, its greatest white), `False`: as 8 bits are (8-bit as stored,
# float within [0, 1] × 255). Each leaves headroom below its type's top for the alpha channel.
TIFF_SAMPLES = {
    "uint8": (lambda p: p, False),
    "int8": (lambda p: (p // 2 - 64).astype(np.int8), True),
    "uint16": (lambda p: p.astype(np.uint16) * 256, True),
    "int16": (lambda p: p.astype(np.int16) * 100 - 12800, True),
    "int32": (lambda p: p.astype(np.int32) * 100_000 - 12_800_000, True),
    "float32-unit": (lambda p: p.astype(np.float32) / 255, False),
    "float32-wide": (lambda p: p.astype(np.float32) * 4 - 300, True),
    "float64-unit": (lambda p: p.astype(np.float64) / 255, False),
}


@pytest.mark.parametrize("channels", ["gray", "alpha"])
@pytest.mark.parametrize("sample", TIFF_SAMPLES)
def test_a_gray_or_alpha_tiff_of_any_sample_type_decodes_by_its_range(sample: str,
                                                                     channels: str) -> None:
    # OpenCV's colour decode refused 32- and 64-bit ones without three channels as damaged.
    to_sample, stretched = TIFF_SAMPLES[sample]
    rng = np.random.default_rng(5)
    picture = XRAY if channels == "gray" else rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    stored = to_sample(picture)
    values = stored.astype(np.float64)
    lo, hi = (values.min(), values.max()) if stretched else (0.0, 1.0 if sample[0] == "f" else 255)
    expected = np.rint((values - lo) * 255 / (hi - lo)).astype(np.uint8)
    if channels == "alpha":  # beyond the picture's values: the alpha channel is dropped first
        top = np.iinfo(stored.dtype).max if stored.dtype.kind in "iu" else 2.0
        stored = np.dstack([stored, np.full(stored.shape[:2], top, stored.dtype)])
    out = decode_rgb(encode(stored, ".tiff"), W)
    np.testing.assert_allclose(out, decode_rgb(encode(expected, ".png"), W), atol=1)


def test_a_gray_float_tiff_is_turned_by_its_orientation_tag() -> None:
    # As its 8-bit version is: read as stored, it still comes out as a viewer shows it.
    def tiff(picture: np.ndarray) -> bytes:
        return pil_bytes(Image.fromarray(picture), "TIFF", tiffinfo={0x0112: 6})  # 90° clockwise

    turned = decode_rgb(tiff(XRAY), W)
    assert not np.array_equal(turned, decode_rgb(encode(XRAY, ".png"), W))
    np.testing.assert_allclose(decode_rgb(tiff(XRAY.astype(np.float32) / 255), W), turned, atol=1)


def test_a_tiff_read_as_stored_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    # OpenCV's colour decode refused each 32- or 64-bit one with an error line on stderr (from
    # C++, which capfd sees) before the second decode read it: a line per image of a test set.
    for to_sample, _ in TIFF_SAMPLES.values():
        decode_rgb(encode(to_sample(XRAY), ".tiff"), W)
    big = pil_bytes(Image.fromarray(XRAY.astype(np.float32) / 255), "TIFF", big_tiff=True)
    np.testing.assert_allclose(decode_rgb(big, W), decode_rgb(encode(XRAY, ".png"), W), atol=1)
    assert capfd.readouterr() == ("", "")
    # With alpha: OpenCV writes no ExtraSamples tag, which libtiff warns about (the file's
    # fault, whatever reads it); the refusal's error line is gone too.
    for to_sample, _ in TIFF_SAMPLES.values():
        decode_rgb(encode(to_sample(np.dstack([XRAY] * 4)), ".tiff"), W)
    assert "ERROR" not in capfd.readouterr().err


@pytest.mark.parametrize(("make", "layout"), [
    (lambda: encode(XRAY.astype(np.float32), ".tiff"), (32, 1)),
    (lambda: encode(np.dstack([XRAY] * 4).astype(np.float64), ".tiff"), (64, 4)),
    (lambda: encode(np.dstack([XRAY] * 3), ".tiff"), (8, 3)),  # 3 values: at an offset
    (lambda: pil_bytes(Image.frombytes("I;16B", XRAY.shape[::-1],
                                       XRAY.astype(">u2").tobytes()), "TIFF"), (16, 1)),  # MM
    (lambda: pil_bytes(Image.fromarray(np.dstack([XRAY] * 3)), "TIFF", big_tiff=True), (8, 3)),
    (lambda: pil_bytes(Image.fromarray(XRAY.astype(np.float32)), "TIFF", big_tiff=True),
     (32, 1)),
    (lambda: b"II*\x00\x08\x00\x00\x00", None),  # its directory is missing
    (lambda: b"II*\x00\x08\x00\x00\x00\x01\x00" + struct.pack("<HHI4s", 258, 4, 1, bytes(4)),
     None),  # BitsPerSample not a SHORT: not as TIFF 6.0 writes it
])
def test_a_tiffs_layout_is_read_from_its_header(make: object, layout: tuple[int, int] | None
                                                ) -> None:
    assert decode.tiff_layout(make()) == layout  # type: ignore[operator]


def test_to_uint8_maps_a_span_rounds_and_saturates() -> None:
    img = np.array([[-100, 0, 1, 2, 3, 4, 5000]], np.int16)
    np.testing.assert_array_equal(decode.to_uint8(img, (0, 4)),
                                  [[0, 0, 64, 128, 191, 255, 255]])  # 63.75, 127.5 → 128 (even)
    np.testing.assert_array_equal(decode.to_uint8(img, (0, 4), inverted=True),
                                  [[255, 255, 191, 128, 64, 0, 0]])
    # Float beyond [0, 1]: its own finite range; NaN as its least value, ±inf saturated.
    floats = np.array([[np.nan, -np.inf, 0.5, 1.5, 2.5, np.inf]], np.float32)
    np.testing.assert_array_equal(decode.to_uint8(floats), [[0, 0, 0, 128, 255, 255]])
    u8 = np.arange(5, dtype=np.uint8)
    assert decode.to_uint8(u8) is u8  # 8 bits: as stored, no copy


def test_an_8_bit_dicom_shows_as_stored_over_its_bits() -> None:
    # 8 bits: the stored values, as an 8-bit PNG's; a 1-bit mask (0, 1): black and white.
    np.testing.assert_array_equal(decode_rgb(_dicom(XRAY), W), decode_rgb(encode(XRAY, ".png"), W))
    mask = (XRAY > 128).astype(np.uint8)
    np.testing.assert_array_equal(decode_rgb(_dicom(mask, bits_stored=1), W),
                                  decode_rgb(encode(mask * 255, ".png"), W))
