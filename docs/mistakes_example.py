"""Make the small labelled data set behind docs/val_mistakes.png: shapes, a few in the wrong folder.

    python docs/mistakes_example.py data/raw      # writes data/raw/train and data/raw/test
    dvc repro                                     # then look at reports/val_mistakes.png

Three classes (circle, square, triangle), 80 training and 20 test images each, 200×200, of
random colours, sizes and places; 8 training images of each class are drawn as another shape
but filed under this one, as a mislabelled photo would be. A head on ImageNet features learns
the shapes, and the mislabelled files are its most confident "mistakes". Refuses to write into
folders that exist.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("circle", "square", "triangle")
SIDE, N_TRAIN, N_TEST, N_WRONG = 200, 80, 20, 8


def draw(shape: str, rng: np.random.Generator) -> np.ndarray:
    img = np.full((SIDE, SIDE, 3), rng.integers(0, 256, 3), np.uint8)
    colour = [int(c) for c in rng.integers(0, 256, 3)]
    r = int(rng.integers(30, 70))
    cx, cy = (int(v) for v in rng.integers(r + 5, SIDE - r - 5, 2))
    if shape == "circle":
        cv2.circle(img, (cx, cy), r, colour, -1)
    elif shape == "square":
        cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), colour, -1)
    else:
        pts = np.array([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], np.int32)
        cv2.fillPoly(img, [pts], colour)
    return img


def write_set(root: Path, n: int, wrong: int, rng: np.random.Generator) -> None:
    for label, cls in enumerate(CLASSES):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            # the first `wrong` files of each class show the next class's shape
            shape = CLASSES[(label + 1) % len(CLASSES)] if i < wrong else cls
            cv2.imwrite(str(root / cls / f"{cls}_{i:03d}.jpg"), draw(shape, rng))


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "data/raw")
    for split in ("train", "test"):
        if (out / split).exists():
            sys.exit(f"{out / split}: exists; move it away or give another folder")
    rng = np.random.default_rng(0)
    write_set(out / "train", N_TRAIN, N_WRONG, rng)
    write_set(out / "test", N_TEST, 0, rng)
    print(f"{out}/train and {out}/test: {len(CLASSES)} classes, {N_WRONG} mislabelled "
          "training images each")


if __name__ == "__main__":
    main()
