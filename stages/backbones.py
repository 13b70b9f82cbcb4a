"""The backbone registry: which Keras application, which preprocessing, which weights file.

Each backbone is `include_top=False` + global average pooling: a 299×299 RGB image → 2048 floats.
The network's own `preprocess_input` runs inside the extractor, on RGB uint8 pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The folder of local weights that dvc.yaml tracks (see README.md, "Weights"); not named
# `weights`, which would clash with the param of that name in `dvc exp show`.
WEIGHTS_DIR = "keras_weights"


@dataclass(frozen=True)
class Backbone:
    name: str
    module: str       # keras.applications.<module>
    builder: str      # the constructor in that module
    weights_file: str  # Keras' own name of the notop ImageNet weights
    dim: int = 2048

    def keras_module(self) -> Any:
        import keras  # heavy: only when a network is really needed

        return getattr(keras.applications, self.module)

    @property
    def preprocess(self) -> Callable[[Any], Any]:
        return self.keras_module().preprocess_input


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone("inception_v3", "inception_v3", "InceptionV3",
                 "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        Backbone("xception", "xception", "Xception",
                 "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    )
}
FUSED_ORDER = ("inception_v3", "xception")  # column order in fused.h5, as in the original


class WeightsError(ValueError):
    """The `weights` param cannot give this backbone real weights."""


def resolve_weights(backbone: Backbone, weights: str) -> str | None:
    """'imagenet' → 'imagenet' (Keras downloads), 'none' → None (random init, for tests),
    a folder → the path of the backbone's notop file in it, which must exist."""
    if weights == "imagenet":
        return "imagenet"
    if weights == "none":
        return None
    folder = Path(weights)
    if not folder.is_dir():
        raise WeightsError(
            f"params.yaml: 'weights' is {weights!r}, which is neither 'imagenet', 'none' nor a "
            f"folder. Put Keras' notop weight files in {WEIGHTS_DIR}/ and set "
            f"weights: {WEIGHTS_DIR}"
        )
    if folder.resolve() != Path(WEIGHTS_DIR).resolve():
        raise WeightsError(
            f"params.yaml: 'weights' is {weights!r}, but DVC tracks local weights only in "
            f"{WEIGHTS_DIR}/ (so that replacing a file reruns the extractor). Copy or link the "
            f"files into {WEIGHTS_DIR}/ and set weights: {WEIGHTS_DIR}"
        )
    path = folder / backbone.weights_file
    if not path.is_file():
        raise WeightsError(
            f"{path}: missing. {backbone.name} needs Keras' notop ImageNet weights under exactly "
            f"this name (from https://storage.googleapis.com/tensorflow/keras-applications/), or "
            "set weights: imagenet on a machine with internet"
        )
    return str(path)


def build(backbone: Backbone, width: int, weights: str, seed: int) -> Any:
    """The Keras feature extractor: uint8-range RGB (N, width, width, 3) → float (N, 2048)."""
    import keras

    resolved = resolve_weights(backbone, weights)
    keras.utils.set_random_seed(seed)  # with weights none the random init comes from `seed`
    ctor = getattr(backbone.keras_module(), backbone.builder)
    return ctor(include_top=False, weights=resolved, input_shape=(width, width, 3),
                pooling="avg")

