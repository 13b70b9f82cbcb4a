"""A thread pool that maps a function over many items, in order, with bounded memory."""

from __future__ import annotations

# Before cv2 loads: sets OpenCV's pixel limit (its guard against decompression bombs).
from stages import limits  # noqa: F401  # isort: skip

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import cv2

from stages.decode import BadImage


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
