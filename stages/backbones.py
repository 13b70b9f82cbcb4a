"""The backbone registry: which Keras application, which preprocessing, which weights file.

Each backbone is `include_top=False` + global average pooling: an RGB image → one vector, as long
as Keras builds it (2048 for the card's InceptionV3 and Xception; the extractor reads it from the
model). The network's own `preprocess_input` runs inside the extractor, on RGB uint8 pixels
(another scaling for a weight file trained with it: `preprocessing`).
The weight file names are Keras' own (tests/test_backbones.py checks them against what Keras
asks for), so a `keras_weights/` folder filled from `~/.keras/models` works as it is; any other
file in that folder is one network's entry of `weights` (stages/weight_files.py loads it).

`build(backbone, width, weights, seed)` and `preprocessing(backbone, preprocess)` rebuild the
network from one network's entry, or from what a feature file records of it (`weights`, as
`feature_files.weights_of` writes it, and `preprocess`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages import weight_files
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


def weight_path(backbone: Backbone, weights: str) -> Path | None:
    """The file one network's entry names: Keras' own name in keras_weights/ for
    `keras_weights`, the path itself for a file, None for ImageNet's download or `none`."""
    if weights in ("imagenet", "none"):
        return None
    return Path(WEIGHTS_DIR) / backbone.weights_file if weights == WEIGHTS_DIR else Path(weights)


def resolve_weights(backbone: Backbone, weights: str) -> str | None:
    """One network's `weights`: 'imagenet' → 'imagenet' (Keras downloads), 'none' → None
    (random init, for tests), 'keras_weights' → the path of the backbone's notop file in that
    folder, a path in that folder → that path; a file must exist."""
    if weights == "imagenet":
        return "imagenet"
    if weights == "none":
        return None
    own = weights == WEIGHTS_DIR
    path = weight_path(backbone, weights)
    assert path is not None
    if not own and Path(WEIGHTS_DIR) not in path.parents:
        # params validation allows no other; other folders would not be DVC-tracked
        raise WeightsError(
            f"params.yaml: 'weights' is {weights!r}, but DVC tracks local weights only in "
            f"{WEIGHTS_DIR}/ (so that replacing a file reruns the extractor). Copy or link the "
            f"files into {WEIGHTS_DIR}/ and set weights: {WEIGHTS_DIR}"
        )
    if not path.is_file():
        raise WeightsError(
            f"{path}: missing. {backbone.name} needs Keras' notop ImageNet weights under exactly "
            f"this name (from {KERAS_WEIGHTS_URL}), or set weights: imagenet on a machine with "
            "internet" if own else
            f"{path}: missing. Put it in {WEIGHTS_DIR}/ and `dvc add {WEIGHTS_DIR}`, or change "
            f"weights.{backbone.name} in params.yaml"
        )
    return str(path)


# The scalings of `preprocess` other than the network's own, on float RGB pixels in [0, 255].
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocessing(backbone: Backbone, preprocess: str = "network") -> Callable[[Any], Any]:
    """The input scaling `preprocess` names (stages/params.py, PREPROCESS), for tensors of
    either kind the extractors pass (TensorFlow's, Keras' symbolic ones)."""
    import numpy as np

    if preprocess == "network":
        return backbone.preprocess
    if preprocess == "scale_0_1":
        return lambda x: x / 255.0
    if preprocess == "scale_-1_1":
        return lambda x: x / 127.5 - 1.0
    if preprocess == "imagenet_mean_std":
        mean = np.asarray(_IMAGENET_MEAN, np.float32) * 255.0
        std = np.asarray(_IMAGENET_STD, np.float32) * 255.0
        return lambda x: (x - mean) / std
    raise WeightsError(f"preprocess {preprocess!r}: unknown; one of network, scale_0_1, "
                       "scale_-1_1, imagenet_mean_std")


def build(backbone: Backbone, width: int, weights: str, seed: int) -> Any:
    """The Keras feature extractor: preprocessed RGB (N, width, width, 3) → float (N, D).
    `weights`: one network's entry (`resolve_weights`); a file that is not Keras' own loads
    whole or stops the stage (stages/weight_files.py)."""
    import keras

    resolved = resolve_weights(backbone, weights)
    other_file = resolved is not None and weights not in ("imagenet", WEIGHTS_DIR)
    keras.utils.set_random_seed(seed)  # with weights none the random init comes from `seed`
    ctor = getattr(backbone.keras_module(), backbone.builder)
    try:
        model = ctor(include_top=False, weights=None if other_file else resolved,
                     input_shape=(width, width, 3), pooling="avg")
        if other_file:
            weight_files.load(model, backbone.name, str(resolved))
        return model
    except Exception as e:  # Keras' get_file raises a bare Exception when a download fails
        if not str(e).startswith("URL fetch failure"):
            raise
        raise WeightsError(
            f"could not download {backbone.name}'s ImageNet weights ({str(e).split(': ', 1)[-1]})."
            f" Without internet, put {backbone.weights_file} (from {KERAS_WEIGHTS_URL}, or "
            f"~/.keras/models on a machine that has it) in {WEIGHTS_DIR}/ and set "
            f"weights: {WEIGHTS_DIR} (docs/data.md, \"Weights\")") from None


def maps_and_pooled(backbone: Backbone, width: int, weights: str, seed: int) -> tuple[Any, bool]:
    """(a Keras model: preprocessed RGB → [the last convolutional maps, the pooled features],
    whether the maps are exact): the maps add up to the head's logit only where the pooled
    vector goes straight into it (ConvNeXt normalises it after the pooling)."""
    import keras

    net = build(backbone, width, weights, seed)
    gap = next(layer for layer in reversed(net.layers)
               if isinstance(layer, keras.layers.GlobalAveragePooling2D))
    both = keras.Model(net.inputs, [gap.input, net.output], name=f"{backbone.name}_maps")
    return both, gap is net.layers[-1]
