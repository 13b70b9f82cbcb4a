"""Resized files as `resize` writes them (Kaggle layout), from synthetic images: one writer for
the benchmarks and the tests, so their files keep the layout the extractors read (the rows'
labels and names, the class names, the test ids). numpy and h5py only: it also runs on a GPU
machine without OpenCV.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

# One image: (the split's random generator, the row's label: 0 cat, 1 dog; 0 for test rows)
# → uint8 (width, width, 3).
Draw = Callable[[np.random.Generator, int], np.ndarray]


def write_resized(folder: Path, n_train: int, n_test: int, width: int,
                  draw: Draw) -> tuple[Path, Path]:
    """`folder`/train.h5 (labels alternating cat, dog; names `<i>.jpg`; classes) and test.h5
    (Kaggle's: ids 1..n_test, names `<id>.jpg`), one image at a time from `draw` (seeded 0 for
    train, 1 for test)."""
    from stages import h5io

    folder.mkdir(parents=True, exist_ok=True)
    labels = (np.arange(n_train) % 2).astype(np.uint8)
    paths = folder / "train.h5", folder / "test.h5"
    for path, rows, seed in ((paths[0], n_train, 0), (paths[1], n_test, 1)):
        rng = np.random.default_rng(seed)
        with h5io.create_h5(path) as f:
            images = h5io.Appender(f, "images", (width, width, 3), np.uint8)  # as resize
            for i in range(rows):
                images.append(draw(rng, int(labels[i]) if path == paths[0] else 0)[None])
            if path == paths[0]:
                h5io.write_row_info(f, {"labels": labels, "names": np.array(
                    [f"{i}.jpg" for i in range(rows)], object)}, ["cat", "dog"])
            else:
                ids = np.arange(1, rows + 1, dtype=np.int64)
                h5io.write_row_info(f, {"ids": ids, "names": np.array(
                    [f"{i}.jpg" for i in ids], object)}, None)
    return paths


def colour_field(width: int, noise: float = 20) -> Draw:
    """Smooth random colour fields (a 5×5 grid blown up bilinearly) plus noise: features that
    differ from image to image, as photos' do."""
    grid = np.linspace(0, 4, width)
    up = np.clip(1 - np.abs(grid[:, None] - np.arange(5)[None, :]), 0, 1).astype(np.float32)

    def draw(rng: np.random.Generator, label: int) -> np.ndarray:
        small = rng.integers(0, 256, (5, 5, 3)).astype(np.float32)
        img = np.einsum("ij,jkc,lk->ilc", up, small, up)
        img += rng.normal(0, noise, img.shape).astype(np.float32)
        return np.clip(img, 0, 255).astype(np.uint8)

    return draw
