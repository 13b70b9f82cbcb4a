"""Class activation maps (Zhou et al., CVPR 2016) of the trained classifier, and their pictures.

The head is global average pooling, then one Dense layer, so its logit for a class is a sum
over the networks of each network's last convolutional maps, averaged over their grid, times
that network's Dense columns, plus the bias. Taken before the averaging, the same product is a
map over the image whose mean is the network's share of the logit: where the model saw what
raised (red) or lowered (blue) the score of the class it decided on. Each network's map lives on
its own coarse grid (8×8 for InceptionV3 at 299 px, 10×10 for Xception); they are upsampled
bilinearly to the image's width and summed. docs/cam.md says how to read them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import cv2
import h5py
import numpy as np

from stages import h5io

ALPHA = 0.6  # the colour's opacity where the map is strongest; the image shows through elsewhere


def upsampled(grid: np.ndarray, width: int) -> np.ndarray:
    """(n, h, w) maps → (n, width, width), bilinear with pixel centres aligned (OpenCV's)."""
    return np.stack([cv2.resize(g, (width, width), interpolation=cv2.INTER_LINEAR)
                     for g in grid.astype(np.float32)]) if len(grid) else \
        np.zeros((0, width, width), np.float32)


def class_map(grids: Sequence[np.ndarray], width: int) -> np.ndarray:
    """The networks' maps, each (n, h_i, w_i) in logit units, upsampled and summed:
    float32 (n, width, width)."""
    return np.sum([upsampled(g, width) for g in grids], axis=0).astype(np.float32)


def overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """The image (uint8 RGB) with the map over it: red where it raised the predicted class's
    logit, blue where it lowered it, more opaque the larger the contribution (scaled to this
    map's largest), the image itself where the map is near zero."""
    import matplotlib

    lim = float(np.max(np.abs(cam))) or 1.0
    colour = matplotlib.colormaps["bwr"]((cam / lim + 1) / 2)[..., :3]
    alpha = ALPHA * np.abs(cam / lim)[..., None]
    out = image.astype(np.float32) / 255 * (1 - alpha) + colour * alpha
    return np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8)


def write_png(path: str | os.PathLike[str], image: np.ndarray, cam: np.ndarray,
              caption: str) -> None:
    """One image's picture: the overlay, the caption above it, a colour bar in logit units."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lim = float(np.max(np.abs(cam))) or 1.0
    fig, ax = plt.subplots(figsize=(4.2, 3.6), layout="constrained")
    ax.imshow(overlay(image, cam))
    ax.axis("off")
    ax.set_title(caption, fontsize=8)
    bar = fig.colorbar(matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(-lim, lim),
                                                    "bwr"), ax=ax, shrink=0.8)
    bar.set_label("contribution to the logit", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    with h5io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, metadata={"Software": None})
    plt.close(fig)


class CamWriter:
    """Appends batches to an open `cam.h5` (`cam_file`)."""

    def __init__(self, f: h5py.File, width: int, n_classes: int) -> None:
        self.f = f
        self.maps = h5io.Appender(f, "maps", (width, width), np.float32)  # a map a chunk
        self.probs = h5io.Appender(f, "probabilities", (n_classes,), np.float32, 256)
        self.names: list[str] = []
        self.predicted: list[int] = []

    def append(self, names: Sequence[str], maps: np.ndarray, probs: np.ndarray,
               predicted: np.ndarray) -> None:
        self.maps.append(maps)
        self.probs.append(probs)
        self.names += list(names)
        self.predicted += [int(c) for c in predicted]


@contextlib.contextmanager
def cam_file(path: str | os.PathLike[str], width: int, classes: Sequence[str]
             ) -> Iterator[CamWriter]:
    """`cam.h5`, written batch by batch under a temporary name: `maps` float32
    (n, width, width) in logit units, `names`, `predicted` (class indices), `probabilities`
    (n, K) and `classes`."""
    with h5io.create_h5(path) as f:
        writer = CamWriter(f, width, len(classes))
        yield writer
        h5io.write_array(f, "names", np.asarray(writer.names, object))
        h5io.write_array(f, "predicted", np.asarray(writer.predicted, np.int64))
        h5io.write_array(f, "classes", np.asarray(list(classes), object))
