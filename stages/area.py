"""Area resampling: `cv2.resize(img, (width, width), interpolation=cv2.INTER_AREA)`, byte for byte,
about 2.5× faster where the resize stage spends its time (a 500×375 photo to 299×299).

Shrinking by a non-integer factor (the Kaggle photos), OpenCV's INTER_AREA takes each output pixel
as the weighted mean of the source pixels its cell covers, in float32: first, for every source row,
the horizontal sums over each output column's sources (in source order, from zero); then, for each
output row, those row sums weighted and added in source-row order; then round half to even and
saturate. It does this in scalar code and redoes the row sums of every source row that straddles
two output rows, so it costs more than decoding the JPEG.

Here the same float32 operations, in the same order, run as contiguous multiply-adds that the
compiler vectorises: the horizontal pass is a weighted sum of source *columns* (rows of the
transposed image), the vertical pass a weighted sum of rows of the (transposed back) row sums.
Same operations, same order, no fused multiply-add (numba does not contract without fastmath):
the same bytes, which tests/test_decode.py checks against cv2.resize on random sizes. Integer
factors on both axes and enlarging take other OpenCV code paths and go to cv2.resize itself.
"""

from __future__ import annotations

import functools
import math

import cv2
import numba
import numpy as np


def _scale(ssize: int, dsize: int) -> float:
    return 1.0 / (dsize / ssize)  # as OpenCV computes it: 1 / inv_scale, in double


@functools.lru_cache(maxsize=256)
def area_table(ssize: int, dsize: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's `computeResizeAreaTab` for one axis, grouped by output index: output `i` is the
    sum over k in [start[i], start[i+1]) of weight[k] × source[index[k]], in that order."""
    scale = _scale(ssize, dsize)
    start, index, weight = [0], [], []
    for d in range(dsize):
        f1 = d * scale
        f2 = f1 + scale
        cell = min(scale, ssize - f1)
        s2 = min(math.floor(f2), ssize - 1)
        s1 = min(math.ceil(f1), s2)
        if s1 - f1 > 1e-3:  # the part of a source pixel left of the first whole one
            index.append(s1 - 1)
            weight.append((s1 - f1) / cell)
        for s in range(s1, s2):
            index.append(s)
            weight.append(1.0 / cell)
        if f2 - s2 > 1e-3:  # the part right of the last whole one
            index.append(s2)
            weight.append(min(f2 - s2, 1.0, cell) / cell)
        start.append(len(index))
    # Weights computed in double and rounded once to float32, as OpenCV's table does.
    return (np.array(start, np.int64), np.array(index, np.int64), np.array(weight, np.float32))


@numba.njit(nogil=True, cache=True)
def _weighted_rows(src: np.ndarray, out: np.ndarray, start: np.ndarray, index: np.ndarray,
                   weight: np.ndarray) -> None:  # pragma: no cover - compiled
    """out[i] = Σ weight[k] × float32(src[index[k]]) over k in [start[i], start[i+1]), from the
    first term, in k order: OpenCV's sums, one whole row of values at a time."""
    n = src.shape[1]
    for i in range(out.shape[0]):
        k0 = start[i]
        a = weight[k0]
        s = src[index[k0]]
        o = out[i]
        for j in range(n):
            o[j] = np.float32(s[j]) * a
        for k in range(k0 + 1, start[i + 1]):
            a = weight[k]
            s = src[index[k]]
            for j in range(n):
                o[j] = o[j] + np.float32(s[j]) * a


def _opencv_generic_path(ssize: tuple[int, int], dsize: tuple[int, int]) -> bool:
    """Whether OpenCV's INTER_AREA takes its generic path: shrinking (scale ≥ 1) on both axes,
    not by an integer factor on both (its fast path), and not the same size (a copy)."""
    scales = [_scale(s, d) for s, d in zip(ssize, dsize, strict=True)]
    integer = all(abs(s - round(s)) < np.finfo(np.float64).eps for s in scales)
    return ssize != dsize and min(scales) >= 1 and not integer


def resize_area(img: np.ndarray, width: int) -> np.ndarray:
    """uint8 (H, W[, C]) → (width, width[, C]), equal to cv2.resize with INTER_AREA."""
    h, w = img.shape[:2]
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or not _opencv_generic_path((w, h),
                                                                              (width, width)):
        return cv2.resize(img, (width, width), interpolation=cv2.INTER_AREA)
    cn = img.shape[2] if img.ndim == 3 else 1
    # Horizontal pass over the transposed image: each output column is a weighted sum of whole
    # source columns, each of them one contiguous row here.
    cols = cv2.transpose(np.ascontiguousarray(img)).reshape(w, h * cn)
    row_sums_t = np.empty((width, h * cn), np.float32)
    _weighted_rows(cols, row_sums_t, *area_table(w, width))
    # Vertical pass over the row sums, transposed back: output rows are weighted sums of them.
    row_sums = cv2.transpose(row_sums_t.reshape(width, h, cn)).reshape(h, width * cn)
    sums = np.empty((width, width * cn), np.float32)
    _weighted_rows(row_sums, sums, *area_table(h, width))
    out = cv2.convertScaleAbs(sums)  # OpenCV's own rounding: half to even, saturated to uint8
    return out.reshape((width, width, cn) if cn > 1 else (width, width))  # as cv2 shapes it
