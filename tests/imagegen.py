"""Real image files written at test time: Kaggle-named JPEGs, class folders, a test set.

Cats are reddish and dogs bluish, with noise, so a head trained on random-init features still
has something to learn; `cat.0.jpg` is pure red, the known colour for the RGB-order check.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

RED_RGB = (255, 0, 0)


# BGR base colours by label: reddish, bluish, greenish, yellowish, then around again.
PALETTE = ((40, 60, 200), (200, 60, 40), (60, 190, 50), (40, 200, 210))


def image(rng: np.random.Generator, label: int, w: int = 96, h: int = 80) -> np.ndarray:
    """A BGR image for cv2.imwrite: reddish for label 0, bluish for label 1 (PALETTE)."""
    base = np.array(PALETTE[label % len(PALETTE)], np.float32)
    img = base + rng.normal(0, 25, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def write(path: Path, bgr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix or ".jpg", bgr)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def kaggle_train(root: Path, per_class: int, seed: int = 0, w: int = 96, h: int = 80) -> Path:
    """`cat.N.jpg` and `dog.N.jpg`; cat.0 is pure red (RGB 255, 0, 0)."""
    rng = np.random.default_rng(seed)
    for label, cls in enumerate(("cat", "dog")):
        for i in range(per_class):
            img = image(rng, label, w, h)
            if label == 0 and i == 0:
                img[:] = RED_RGB[::-1]
            write(root / f"{cls}.{i}.jpg", img)
    return root


def class_folders(root: Path, classes: tuple[str, ...], per_class: int, seed: int = 0) -> Path:
    """`<class>/<i>.jpg`, each class in its own colour (PALETTE, in the order given)."""
    rng = np.random.default_rng(seed)
    for label, cls in enumerate(classes):
        for i in range(per_class):
            write(root / cls / f"{i}.jpg", image(rng, label))
    return root


def test_set(root: Path, n: int, seed: int = 1, w: int = 96, h: int = 80) -> Path:
    """`<id>.jpg` for ids 1..n (Kaggle's numbering)."""
    rng = np.random.default_rng(seed)
    for i in range(1, n + 1):
        write(root / f"{i}.jpg", image(rng, i % 2, w, h))
    return root
