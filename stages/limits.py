"""How many pixels one image may have: as many as the memory allows with every worker decoding one.

The limit is the guard against decompression bombs (a small file that claims 50000×50000 pixels):
its point is bounded memory, so it follows the memory available and the worker count instead of
refusing a 108 or 200 MP phone photo on a machine that can hold it. Users set it with OpenCV's own
variable, OPENCV_IO_MAX_IMAGE_PIXELS, which then wins for both guards: ours (JPEG and PNG headers,
and DICOM's Rows × Columns, in decode_rgb) and OpenCV's (every format it decodes).

OpenCV reads that variable once, when cv2 loads (file-level statics in its loadsave.cpp), so this
module puts the limit for the default worker count there first (import it before anything imports
cv2), and a run's limit never exceeds it: more --workers lower it, fewer cannot raise it, or our
header check would pass an image that OpenCV then refuses. Only the variable raises it.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"
# Peak bytes per pixel while decode_rgb runs, measured as VmHWM − VmRSS of a fresh process around
# one decode_rgb of a real 12000×9000 (108 MP) file, to width 299: 6.6 for a baseline JPEG (3 for
# the decoded RGB, 3 for area.py's transpose of it, 0.6 for its float32 row sums), for a
# progressive 4:2:0 JPEG, 8-bit PNG, TIFF and an EXIF-rotated JPEG; 9.0 for a progressive 4:4:4
# JPEG (libjpeg keeps all its coefficients, 6 B/px, beside the output). DICOM (12 MP, 12 bits in
# 16): 4.7 uncompressed, 6.2 RLE and JPEG 2000; 16-bit TIFF 9.1 (the same way, 12 MP files).
# The row sums take 24 × width ÷ image width bytes a pixel: 10 leaves room for narrower images.
BYTES_PER_PIXEL = 10
# The share of available memory the decoding workers may fill together. The rest is the margin
# for formats whose decoders hold a wider copy (measured alike: GIF 12, JPEG 2000 15, AVIF 17 B/px,
# i.e. at most 0.85 of it; 16-bit PNG 12, since its samples are kept at 16 bits until mapped to 8)
# and for the rest of the process. Float images (PFM, Radiance HDR) peak at 24 B/px in OpenCV's
# decoder alone (float32 samples and a copy): at the limit, with every worker decoding one, 1.2×
# the memory available; they are rare, and OPENCV_IO_MAX_IMAGE_PIXELS lowers the limit.
MEMORY_SHARE = 0.5
OPENCV_DEFAULT = 1 << 30  # OpenCV's own default; a computed limit never goes above it
_SUFFIX = {None: 1, "KB": 1 << 10, "Kb": 1 << 10, "kb": 1 << 10,
           "MB": 1 << 20, "Mb": 1 << 20, "mb": 1 << 20}  # what OpenCV's parser accepts


def parse_limit(value: str) -> int:
    """A value of OPENCV_IO_MAX_IMAGE_PIXELS, as OpenCV reads it (digits, optionally KB or MB)."""
    m = re.fullmatch(r"(\d{1,18})(KB|Kb|kb|MB|Mb|mb)?", value)
    if not m:
        # OpenCV aborts the whole process on such a value when it loads: say so in a line first.
        raise ValueError(f"{ENV}={value!r} is not a number of pixels; set it to a whole number, "
                         f"e.g. {ENV}=200000000, or unset it")
    return int(m.group(1)) * _SUFFIX[m.group(2)]


def user_limit(environ: Mapping[str, str] = os.environ) -> int | None:
    """The user's OPENCV_IO_MAX_IMAGE_PIXELS, if set."""
    value = environ.get(ENV)
    return None if value is None else parse_limit(value)


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None  # absent, or "max" (no limit)


def _cgroup_available() -> int | None:
    """What a container's memory limit leaves (limit − usage + reclaimable page cache), or None
    outside one: MemAvailable is the host's, and the container's limit is what kills."""
    v1 = "/sys/fs/cgroup/memory/memory."
    for limit, usage, stat, cache in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current",
         "/sys/fs/cgroup/memory.stat", "inactive_file"),  # cgroup v2
        (v1 + "limit_in_bytes", v1 + "usage_in_bytes", v1 + "stat", "total_inactive_file"),
    ):
        cap, used = _read_int(limit), _read_int(usage)
        if cap is None or used is None or cap >= 1 << 60:  # v1 says "no limit" with a huge number
            continue
        try:
            lines = Path(stat).read_text().splitlines()
            reclaimable = next(int(ln.split()[1]) for ln in lines if ln.split()[0] == cache)
        except (OSError, ValueError, IndexError, StopIteration):
            reclaimable = 0
        return max(0, cap - used + reclaimable)
    return None


def available_memory() -> int:
    """Bytes this process can allocate without swapping: the kernel's MemAvailable (or free RAM
    where there is no /proc/meminfo), less where a container's limit leaves less."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            avail = 8 << 30  # no way to ask: a small machine's worth
    cgroup = _cgroup_available()
    return avail if cgroup is None else min(avail, cgroup)


def pixel_limit(workers: int, available_bytes: int) -> int:
    """Most pixels one image may have so that `workers` decoding such images at once stay within
    MEMORY_SHARE of `available_bytes`; never above OpenCV's own default."""
    share = int(available_bytes * MEMORY_SHARE)
    return max(1, min(OPENCV_DEFAULT, share // (max(1, workers) * BYTES_PER_PIXEL)))


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 1)


try:
    USER_PIXELS = user_limit()  # read once, as OpenCV does, before our default is in its place
except ValueError as e:  # OpenCV would abort the process on it: one line instead, with the fix
    sys.exit(f"stages: {e}")


def max_pixels(workers: int) -> int:
    """The limit for a run with `workers` decoding threads: the user's, else what memory allows,
    but never above DEFAULT_PIXELS, the limit OpenCV loaded with."""
    if USER_PIXELS is not None:
        return USER_PIXELS
    return min(pixel_limit(workers, available_memory()), DEFAULT_PIXELS)


def refusal(w: int, h: int, limit: int) -> str:
    """Why an image of w×h pixels is refused, and how to decode it anyway."""
    fix = f"To decode it, set {ENV}={w * h} (or more) in the environment"
    if USER_PIXELS is not None:
        return (f"claims {w}×{h} pixels, over the {limit:,} that {ENV} allows; refused without "
                f"decoding. {fix}")
    return (f"claims {w}×{h} pixels, over the {limit:,}-pixel limit that keeps the workers, "
            f"each decoding one such image (~{BYTES_PER_PIXEL} bytes a pixel), within "
            f"{MEMORY_SHARE:.0%} of the memory available (a decompression bomb or a huge scan "
            f"would exhaust it); refused without decoding. {fix}")


# OpenCV's guard (the backstop for formats whose header we do not read) takes its limit from the
# environment once, when cv2 loads: so it holds where this module is imported before cv2 (as in
# the stage), and it can only know the default worker count, not the stage's --workers.
DEFAULT_PIXELS = (USER_PIXELS if USER_PIXELS is not None
                  else pixel_limit(default_workers(), available_memory()))
os.environ.setdefault(ENV, str(DEFAULT_PIXELS))
