"""DICOM: the first frame of a medical image, read with pydicom, and the range of its values that a
viewer shows from black to white.

The standard's grayscale pipeline (PS3.4 N.2): stored values → the modality LUT (RescaleSlope and
RescaleIntercept, or a Modality LUT table) → the VOI LUT (the first window, WindowCenter and
WindowWidth, or a VOI LUT table) → its output range from black to white, reversed for
MONOCHROME1 or a Presentation LUT Shape of INVERSE (once where both). Enhanced multi-frame
objects (CT, MR, tomosynthesis) keep the first frame's rescale and window in functional groups;
they are read from there. Where both LUTs are linear (rescale, LINEAR or LINEAR_EXACT window:
nearly every X-ray) that is one affine map of the stored values, so it is returned as the two
stored values that become black and white, and the caller maps the stored pixels in one pass (no
float copy of the image). Any other VOI (a table, a window after a modality table, a SIGMOID
window, a LINEAR one of width 1: a threshold) goes through pydicom's own functions, applied to
every value the stored type can hold rather than to the frame, which is then only looked up in
that table. Colour (RGB, YBR, PALETTE COLOR) comes as RGB.

pydicom decodes uncompressed, deflated and RLE Lossless pixel data itself; JPEG, JPEG-LS and
JPEG 2000 need the plugins the lock installs (pylibjpeg, requirements.in). A transfer syntax that
no installed package decodes is a reason naming it and what to install. pydicom is imported on
the first DICOM file only: it adds ~0.13 s to a start that may see none.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import numpy as np

from stages import limits

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

P = ParamSpec("P")
T = TypeVar("T")
EXTS = frozenset({".dcm", ".dicom"})
HEAD = 132  # a DICOM file: a 128-byte preamble, then b"DICM"
# pydicom warns about every oddity of a file it can still read (through warnings and its logger,
# which has only a NullHandler): a stage prints no line per file, and a file it cannot read gets
# a reason in the skip report instead.
warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")


class Unreadable(ValueError):
    """A DICOM file whose first frame cannot be read; the message is the reason."""


@dataclass
class Frame:
    """Pixels to show, and the values shown as black and as white: `span` (black, white), None
    for the frame's own range; `inverted` swaps black and white (MONOCHROME1, INVERSE)."""

    pixels: np.ndarray  # (rows, columns) grayscale or (rows, columns, 3) RGB
    span: tuple[float, float] | None = None
    inverted: bool = False


def is_dicom(data: bytes) -> bool:
    """Whether `data` starts like a DICOM file (Part 10: a preamble, then `DICM`)."""
    return data[128:HEAD] == b"DICM"


def read(data: bytes, max_pixels: int, force: bool = False) -> Frame:
    """The first frame of the DICOM file `data` (a `.dcm` without the DICOM header with `force`);
    Rows × Columns over `max_pixels` is refused before any pixel data is decoded."""
    ds = _dataset(data, force)
    rows, cols = _number(ds, "Rows", int), _number(ds, "Columns", int)
    if not rows or not cols:
        # pydicom returns an empty data set where the file ends inside its pixel data's items.
        raise Unreadable("damaged DICOM data (nothing readable after its header: truncated?)"
                         if len(ds) == 0 else "DICOM file without an image (no Rows, Columns)")
    if rows * cols > max_pixels:
        raise Unreadable(limits.refusal(cols, rows, max_pixels))
    _decodable(ds)
    pixels = _first_frame(ds)
    photometric = str(_pydicom(ds.get, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut
        return Frame(_pydicom(apply_color_lut, pixels, ds))
    if pixels.ndim == 3:
        return Frame(pixels)  # RGB already: pydicom converts YBR
    return _grayscale(ds, pixels, inverted=photometric == "MONOCHROME1" or _inverse(ds))


def _inverse(ds: Dataset) -> bool:
    """Whether Presentation LUT Shape (2050,0020) is INVERSE: the grayscale pipeline's output
    "after inversion is in P-Values" (PS3.3 C.7.6.1, C.11.6), so a viewer inverts it, also for
    MONOCHROME2 (against the rule that gives INVERSE to MONOCHROME1 only). With MONOCHROME1 it
    names that inversion, not a second one; IDENTITY there leaves MONOCHROME1 inverted (the
    photometric interpretation, which every image has, wins). pydicom's apply_presentation_lut
    inverts around the frame's greatest value, not the VOI's output range: not used here."""
    return str(_pydicom(ds.get, "PresentationLUTShape", "") or "").strip().upper() == "INVERSE"


def _dataset(data: bytes, force: bool) -> Dataset:
    from pydicom import dcmread
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    ds = _pydicom(dcmread, io.BytesIO(data), force=force)
    if "TransferSyntaxUID" not in ds.file_meta:
        if is_dicom(data):  # the file meta that must follow `DICM` is not there
            raise Unreadable("damaged DICOM data (no transfer syntax after its DICM header)")
        implicit, little = ds.original_encoding  # a bare data set: the encoding dcmread guessed
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                          ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    return ds


def _decodable(ds: Dataset) -> None:
    """Raise Unreadable naming the transfer syntax and what to install, where none decodes it."""
    from pydicom.pixels import get_decoder

    uid = ds.file_meta.TransferSyntaxUID
    what = f"DICOM transfer syntax {uid.name} ({uid})"
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise Unreadable(f"{what}: pydicom decodes no pixel data in it; convert the file to an "
                         "uncompressed, RLE, JPEG or JPEG 2000 DICOM first") from None
    if not decoder.is_available:
        raise Unreadable(f"{what}: no installed package decodes it; install one of: "
                         f"{'; '.join(decoder.missing_dependencies)}")


def _first_frame(ds: Dataset) -> np.ndarray:
    from pydicom.pixels import pixel_array

    return _pydicom(pixel_array, ds, index=0)  # index: only the first frame is decoded


def _grayscale(ds: Dataset, stored: np.ndarray, inverted: bool) -> Frame:
    _pydicom(_first_frame_luts, ds)
    slope = _number(ds, "RescaleSlope") or 1.0  # absent, or 0 (invalid): no rescale
    intercept = _number(ds, "RescaleIntercept") or 0.0
    function = str(_pydicom(ds.get, "VOILUTFunction", "LINEAR")).upper()
    window = linear_window(_number(ds, "WindowCenter"), _number(ds, "WindowWidth"), function)
    modality_table = bool(_pydicom(ds.get, "ModalityLUTSequence"))
    table_bits = _pydicom(_voi_table_bits, ds)
    # Not one affine map of the stored values: a VOI table, a window after a modality table, a
    # SIGMOID window, a LINEAR one of width 1 (a threshold).
    if table_bits is not None or (window is not None and (
            modality_table or function == "SIGMOID" or window[0] == window[1])):
        return Frame(_lookup(ds, stored, table_bits), (0.0, 255.0), inverted)
    if modality_table:  # and no VOI: the table's output, by its own range
        from pydicom.pixels import apply_modality_lut
        return Frame(_pydicom(apply_modality_lut, stored, ds), None, inverted)
    if window is None:  # no window: 8-bit samples as stored, over their BitsStored (a 1-bit
        # mask's 0 and 1 are black and white); more, by the frame's own range. A negative slope
        # turns either round.
        bits = _number(ds, "BitsStored", int) or 8
        span = (0.0, 2.0 ** min(bits, 8) - 1) if stored.dtype == np.uint8 else None
        return Frame(stored, span, inverted != (slope < 0))
    black, white = ((v - intercept) / slope for v in window)  # in stored values
    return Frame(stored, (black, white), inverted)


def linear_window(center: float | None, width: float | None, function: str = "LINEAR"
                  ) -> tuple[float, float] | None:
    """The modality values that a window (PS3.3 C.11.2.1.2) shows as black and as white, as a
    LINEAR or LINEAR_EXACT one would (the two are equal for LINEAR of width 1: a threshold); None
    where there is no valid window."""
    if center is None or width is None:
        return None
    if function == "LINEAR":  # its half-pixel convention
        center, width = center - 0.5, width - 1
        return (center - width / 2, center + width / 2) if width >= 0 else None
    return (center - width / 2, center + width / 2) if width > 0 else None


# The functional group macros of an enhanced multi-frame object (PS3.3 C.7.6.16.2) that hold its
# frames' modality and VOI LUTs, and the attributes each holds.
_FRAME_MACROS = {
    "PixelValueTransformationSequence": ("RescaleSlope", "RescaleIntercept",
                                         "ModalityLUTSequence"),
    "FrameVOILUTSequence": ("WindowCenter", "WindowWidth", "VOILUTFunction", "VOILUTSequence"),
}


def _first_frame_luts(ds: Dataset) -> None:
    """The first frame's rescale and window, where functional groups hold them, moved to the top
    level of `ds`, where pydicom's functions and ours read them: each macro from the frame's own
    group, else from the shared one, in place of what the top level had."""
    groups = [seq[0] for keyword in ("PerFrameFunctionalGroupsSequence",
                                     "SharedFunctionalGroupsSequence")
              if (seq := ds.get(keyword))]
    for macro, keywords in _FRAME_MACROS.items():
        item = next((seq[0] for group in groups if (seq := group.get(macro))), None)
        if item is None:
            continue
        for keyword in keywords:
            ds.pop(keyword, None)
            if keyword in item:
                ds.add(item[keyword])


def _voi_table_bits(ds: Dataset) -> int | None:
    """The bits of the VOI LUT table that pydicom's apply_voi_lut applies (its output is 0 to
    2^bits - 1, PS3.3 C.11.2.1.1); None where it applies none."""
    items = ds.get("VOILUTSequence")
    if not items or None in (items[0].get("LUTDescriptor"), items[0].get("LUTData")):
        return None
    return int(items[0].LUTDescriptor[2])


def _lookup(ds: Dataset, stored: np.ndarray, table_bits: int | None) -> np.ndarray:
    """The frame through pydicom's modality and VOI LUTs, as uint8 (_eight_bits). pydicom maps
    every value the stored type can hold (65,536 at most), not the frame: the frame is only
    looked up, with no float copy of it. 32-bit samples go through pydicom's float64 copies of
    the frame instead, since a table of every value they can hold would be far larger (and such
    files are rare)."""
    if stored.dtype.kind in "iu" and stored.dtype.itemsize <= 2:
        codes = np.arange(1 << 8 * stored.dtype.itemsize, dtype=f"u{stored.dtype.itemsize}")
        return _eight_bits(ds, codes.view(stored.dtype), table_bits)[stored.view(codes.dtype)]
    return _eight_bits(ds, stored, table_bits)


def _eight_bits(ds: Dataset, values: np.ndarray, table_bits: int | None) -> np.ndarray:
    """`values` through pydicom's modality and VOI LUTs, the VOI's output range mapped to 0..255
    (rounded half to even, as decode.to_uint8 does): a table's 0 to 2^table_bits - 1, or a
    window's least and greatest output."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, apply_windowing

    shown = _pydicom(apply_voi_lut, _pydicom(apply_modality_lut, values, ds), ds)
    if table_bits is not None:
        black, white = 0.0, 2.0 ** table_bits - 1
    else:  # a window: what it shows -∞ and +∞ as (pydicom's range follows the stored bits and
        # the rescale; a negative slope turns it round, and this turns it back)
        black, white = _pydicom(apply_windowing, np.array([-np.inf, np.inf]), ds)
    out = (shown - black) * (255.0 / (white - black))
    return np.rint(np.clip(out, 0, 255, out=out), out=out).astype(np.uint8)


def _number(ds: Dataset, keyword: str, kind: type = float) -> float | None:
    """A numeric tag's value (the first of several: the first window), None where absent."""
    value = _pydicom(ds.get, keyword)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        value = value[0] if len(value) else None
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise Unreadable(f"DICOM {keyword} is not a number: {value!r}") from None


def _pydicom(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)`, a pydicom call on a file's bytes: whatever it raises on damaged or
    odd data (it raises many kinds) is that file's reason, not a bug of ours."""
    try:
        return fn(*args, **kwargs)
    except MemoryError:
        raise
    except Exception as e:  # see the docstring
        raise Unreadable(f"damaged DICOM data ({type(e).__name__}: {e})") from None
