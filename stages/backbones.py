"""The backbone registry: which Keras application, which preprocessing, which weights file.

Each backbone is `include_top=False` + global average pooling: an RGB image → one vector, as long
as Keras builds it (2048 for the card's InceptionV3 and Xception; the extractor reads it from the
model). The network's own `preprocess_input` runs inside the extractor, on RGB uint8 pixels.
The weight file names are Keras' own (tests/test_backbones.py checks them against what Keras
asks for), so a `keras_weights/` folder filled from `~/.keras/models` works as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.cli import UserError
from stages.params import NETWORKS, WEIGHTS_DIR


@dataclass(frozen=True)
class Backbone:
    name: str
    module: str       # keras.applications.<module>
    builder: str      # the constructor in that module
    weights_file: str  # Keras' own name of the notop ImageNet weights

    def keras_module(self) -> Any:
        import keras  # heavy: only when a network is really needed

        return getattr(keras.applications, self.module)

    @property
    def preprocess(self) -> Callable[[Any], Any]:
        return self.keras_module().preprocess_input


_NOTOP = "_weights_tf_dim_ordering_tf_kernels_notop.h5"  # most of Keras' notop file names
BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone("inception_v3", "inception_v3", "InceptionV3", f"inception_v3{_NOTOP}"),
        Backbone("xception", "xception", "Xception", f"xception{_NOTOP}"),
        Backbone("vgg16", "vgg16", "VGG16", f"vgg16{_NOTOP}"),
        Backbone("resnet50", "resnet50", "ResNet50", f"resnet50{_NOTOP}"),
        Backbone("resnet50_v2", "resnet_v2", "ResNet50V2", f"resnet50v2{_NOTOP}"),
        Backbone("densenet121", "densenet", "DenseNet121", f"densenet121{_NOTOP}"),
        Backbone("inception_resnet_v2", "inception_resnet_v2", "InceptionResNetV2",
                 f"inception_resnet_v2{_NOTOP}"),
        Backbone("efficientnet_v2_b0", "efficientnet_v2", "EfficientNetV2B0",
                 "efficientnetv2-b0_notop.h5"),
        Backbone("convnext_tiny", "convnext", "ConvNeXtTiny", "convnext_tiny_notop.h5"),
    )
}
assert tuple(BACKBONES) == NETWORKS, "stages/params.py's NETWORKS must name the registry"


class WeightsError(UserError, ValueError):
    """The `weights` param cannot give this backbone real weights."""


KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


def resolve_weights(backbone: Backbone, weights: str) -> str | None:
    """'imagenet' → 'imagenet' (Keras downloads), 'none' → None (random init, for tests),
    'keras_weights' → the path of the backbone's notop file in that folder, which must exist."""
    if weights == "imagenet":
        return "imagenet"
    if weights == "none":
        return None
    if weights != WEIGHTS_DIR:
        # params validation allows only these three; other folders would not be DVC-tracked
        raise WeightsError(
            f"params.yaml: 'weights' is {weights!r}, but DVC tracks local weights only in "
            f"{WEIGHTS_DIR}/ (so that replacing a file reruns the extractor). Copy or link the "
            f"files into {WEIGHTS_DIR}/ and set weights: {WEIGHTS_DIR}"
        )
    path = Path(WEIGHTS_DIR) / backbone.weights_file
    if not path.is_file():
        raise WeightsError(
            f"{path}: missing. {backbone.name} needs Keras' notop ImageNet weights under exactly "
            f"this name (from {KERAS_WEIGHTS_URL}), or set weights: imagenet on a machine with "
            "internet"
        )
    return str(path)


def build(backbone: Backbone, width: int, weights: str, seed: int) -> Any:
    """The Keras feature extractor: uint8-range RGB (N, width, width, 3) → float (N, D)."""
    import keras

    resolved = resolve_weights(backbone, weights)
    keras.utils.set_random_seed(seed)  # with weights none the random init comes from `seed`
    ctor = getattr(backbone.keras_module(), backbone.builder)
    try:
        return ctor(include_top=False, weights=resolved, input_shape=(width, width, 3),
                    pooling="avg")
    except Exception as e:  # Keras' get_file raises a bare Exception when a download fails
        if not str(e).startswith("URL fetch failure"):
            raise
        raise WeightsError(
            f"could not download {backbone.name}'s ImageNet weights ({str(e).split(': ', 1)[-1]})."
            f" Without internet, put {backbone.weights_file} (from {KERAS_WEIGHTS_URL}, or "
            f"~/.keras/models on a machine that has it) in {WEIGHTS_DIR}/ and set "
            f"weights: {WEIGHTS_DIR} (docs/data.md, \"Weights\")") from None
