"""The trained classifier: uint8 RGB pixels → class probabilities, with each
network's last convolutional maps beside them for class activation maps (stages/cam.py).

`Classifier.load(model_path)` rebuilds what the pipeline ran, from what the model records
(stages/model_record.py): each network as the extractor builds it (the registry's constructor,
its weights, its input scaling on float32 pixels, global average pooling), the fused
features in the model's column order, and the head's own Dense layer on them (dropout is off at
inference). So its probabilities are `predict`'s for the same resized pixels, before `clip`, to
float32 rounding, and the temperature and threshold `train_head` chose apply as they do there.
(On TensorFlow it computes in float32: for features extracted at `mixed_bfloat16` or
`mixed_float16`, as the model records, its probabilities differ from predict's by that
rounding.) A weight file that is not the one the features were made with (its md5, recorded)
is refused.

A model whose features OpenVINO made (`engine: openvino`, recorded) is run by OpenVINO: each
network's cached IR (stages/openvino_engine.py; int8 ones as quantized for the features) at the
precision the features were made with, returning its pooled features and last maps, and the
Dense head in NumPy, read from the model file: neither TensorFlow nor Keras is imported.

The networks are built once per Classifier; images go through in batches of one shape each run
(the last padded), so TensorFlow traces the graph once or twice, not once per image count.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages import decision, destinations, h5io, model_record, outputs
from stages.backbones import (
    BACKBONES,
    WeightsError,
    maps_and_pooled,
    preprocessing,
    weight_path,
)
from stages.cli import UserError
from stages.feature_files import weights_from
from stages.model_record import ModelRecord
from stages.params import WEIGHTS_DIR

MAX_BATCH = 16  # images per forward pass: memory stays bounded, a CPU is no faster with more
EXPORT_JSON = "classifier.json"  # in an export's assets/: classes, threshold, width, pixels
# The pixels an export takes, as `resize` makes them (stages/decode.py, stages/area.py).
PIXELS = ("decoded as OpenCV decodes them (cv2.imdecode, IMREAD_COLOR_RGB: EXIF orientation "
          "applied, alpha dropped, gray made RGB; JPEG with libjpeg's accurate integer DCT: "
          "tf.io.decode_jpeg(data, channels=3, dct_method='INTEGER_ACCURATE') gives the same "
          "pixels, its default fast DCT does not; DICOM by pydicom, shown by its window), "
          "more than 8 bits a sample mapped to 8 by the image's own range of values, then "
          "squashed to {width} x {width} (the aspect ratio is not kept) with "
          "cv2.resize(image, ({width}, {width}), interpolation=cv2.INTER_AREA)")


def check_weight_file(model_path: str, network: str, file: Path | None, made: str) -> None:
    """The weight file here must be the one the model's features were made with (its md5):
    another version of keras_weights/ would give other features, and silently other
    probabilities."""
    if made and file is not None and file.is_file() and h5io.md5(file) != made:
        raise ModelError(
            f"{model_path}: its {network} features were made with another {file} (md5 {made}). "
            f"Check out the {WEIGHTS_DIR}.dvc of the model's commit and `dvc checkout "
            f"{WEIGHTS_DIR}` (or `dvc pull {WEIGHTS_DIR}`)")


def batch_size(n: int) -> int:
    """Images per forward pass for `n` images: at most MAX_BATCH, in batches of one size (20
    images: 2 × 10, not 16 + 4 padded to 16), so that the graph is traced once."""
    return max(1, math.ceil(n / math.ceil(n / MAX_BATCH))) if n else 1


def batches(pixels: np.ndarray) -> Iterator[tuple[np.ndarray, int]]:
    """(batch, the size to pad it to): `pixels` in batches of one shape per call (the last
    padded by the caller, its padding dropped)."""
    size = batch_size(len(pixels))
    for start in range(0, len(pixels), size):
        yield pixels[start:start + size], size



def _networks(record: ModelRecord) -> Iterator[tuple[str, str, str]]:
    """(network, its recorded weights, its input scaling) in the model's column order."""
    scalings = record.preprocess or ["network"] * len(record.networks)  # a model from before
    yield from zip(record.networks, record.weights, scalings, strict=True)


@contextlib.contextmanager
def _weights_of_the_model(record: ModelRecord, name: str) -> Iterator[None]:
    """A WeightsError's advice is for params.yaml; the weights here are the model's."""
    try:
        yield
    except WeightsError as e:
        recorded = dict(zip(record.networks, record.weights, strict=True))[name]
        file = weight_path(BACKBONES[name], weights_from(recorded)[0])
        why = f"{file}: missing" if file is not None and not file.is_file() else str(e)
        raise ModelError(
            f"{record.path}: its {name} features were made with weights {recorded!r}; "
            f"{why}. Run from the repository root, where `dvc pull {WEIGHTS_DIR}` "
            "brings the team's weight files") from None


def _check_dims(record: ModelRecord, dims: list[int], kernel: np.ndarray) -> list[int]:
    if sum(dims) != kernel.shape[0]:
        raise ModelError(
            f"{record.path}: its head takes {kernel.shape[0]} features, but "
            f"{' + '.join(record.networks)} give {' + '.join(map(str, dims))}. "
            f"{model_record.RETRAIN}")
    return dims


def _dense_weights(path: str) -> tuple[np.ndarray, np.ndarray]:
    """The head's Dense kernel and bias (float64) from the saved model's HDF5, where Keras' .h5
    format keeps a layer's weights (model_weights/dense/…/kernel, bias), read without Keras."""
    import h5py

    found: dict[str, np.ndarray] = {}

    def keep(name: str, obj: Any) -> None:  # (visititems stops at a value returned)
        if isinstance(obj, h5py.Dataset):
            found.setdefault(name.rsplit("/", 1)[-1], np.asarray(obj, np.float64))

    with h5py.File(path, "r") as f:
        layer = f.get("model_weights/dense")
        if isinstance(layer, h5py.Group):
            layer.visititems(keep)
    if not {"kernel", "bias"} <= set(found):
        raise ModelError(f"{path}: holds no Dense layer 'dense' where train_head saves it. "
                         f"{model_record.RETRAIN}")
    return found["kernel"], found["bias"]


class ModelError(UserError, ValueError):
    """The model file cannot be turned back into the classifier it was trained as."""


@dataclass
class Explained:
    """One batch through the classifier, for class activation maps."""

    probs: np.ndarray          # (n, K) float32, as `predict` gives them before `clip`
    predicted: np.ndarray      # (n,) the class decided at the model's threshold
    features: np.ndarray       # (n, D) float32: the fused features, as `concat` writes them
    logits: np.ndarray         # (n,) the head's logit of each image's predicted class
    grids: list[np.ndarray]    # per network (n, h, w) float32: its maps times its Dense columns
    bias: np.ndarray           # (n,) the Dense bias of each image's predicted class


class Classifier:
    """`Classifier.load(path)`, then `.classes`, `.predict(items)`, `.cam(items)`; `items`:
    image paths, or a uint8 RGB array (n, width, width, 3) as `data/resized/*.h5` holds."""

    def __init__(self, record: ModelRecord, forward: Callable[[np.ndarray], list[Any]],
                 kernel: np.ndarray, bias: np.ndarray, dims: list[int], explainable: list[bool],
                 probs_model: Any = None) -> None:
        self.record = record
        self.classes = record.classes
        self.networks = record.networks
        self.width: int = record.width or 0
        self.threshold = record.threshold
        self._forward = forward  # a batch of its compiled size → [probs, fused, *maps]
        self.probs_model = probs_model  # TensorFlow's Keras model (export), else None
        self._kernel, self._bias = kernel, bias
        self._dims, self._explainable = dims, explainable

    @classmethod
    def load(cls, model_path: str = "models/model_2.h5", engine: str | None = None,
             say: Callable[[str], None] | None = None) -> Classifier:
        """Rebuild the classifier `model_path` was trained as, on the engine its features were
        made with (`engine` another: `--export` builds TensorFlow's; `say`: told of
        a conversion to OpenVINO, seconds once per network); one line (a ModelError or
        MissingInput) where its record, or the weights of a network, are missing."""
        record = model_record.read(model_path)
        if record.width is None or not record.networks or len(record.weights) != len(
                record.networks) or not all(record.weights):
            raise ModelError(f"{model_path}: does not record the width, networks and weights "
                             f"its features were made with (a model from before they were "
                             f"recorded). {model_record.RETRAIN}")
        unknown = [n for n in record.networks if n not in BACKBONES]
        if unknown:
            raise ModelError(f"{model_path}: trained on networks this version does not know: "
                             f"{', '.join(unknown)}")
        n = len(record.networks)
        for name, recorded, made in zip(record.networks, record.weights,
                                        record.weights_md5 or [""] * n, strict=True):
            check_weight_file(model_path, name, weight_path(BACKBONES[name],
                                                            weights_from(recorded)[0]), made)
        if (engine or record.engine) == "openvino":
            return cls._openvino(record, say)
        return cls._keras(record)

    @classmethod
    def _keras(cls, record: ModelRecord) -> Classifier:
        """The networks and the head as one Keras model (TensorFlow, or Keras' backend)."""
        import keras

        head = keras.models.load_model(record.path, compile=False, safe_mode=True)
        dense = head.get_layer("dense")
        kernel, bias = (w.astype(np.float64) for w in dense.get_weights())
        pixels = keras.Input((record.width, record.width, 3), dtype="uint8", name="pixels")
        x = keras.ops.cast(pixels, "float32")
        convs, pooled, explainable = [], [], []
        for name, recorded, scaling in _networks(record):
            backbone = BACKBONES[name]
            weights, seed = weights_from(recorded)
            with _weights_of_the_model(record, name):
                both, exact = maps_and_pooled(backbone, record.width or 0, weights, seed)
            conv, pool = both(preprocessing(backbone, scaling)(x))
            explainable.append(exact)
            convs.append(conv)
            pooled.append(pool)
        fused = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate(name="fused")(pooled)
        dims = _check_dims(record, [int(p.shape[-1]) for p in pooled], kernel)
        out = dense(fused)
        probs = keras.ops.concatenate([1.0 - out, out], axis=-1) if out.shape[-1] == 1 else out
        model = keras.Model(pixels, [probs, fused, *convs], name="classifier_maps")
        probs_model = keras.Model(pixels, probs, name="classifier")
        return cls(record, model.predict_on_batch, kernel, bias, dims, explainable, probs_model)

    @classmethod
    def _openvino(cls, record: ModelRecord, say: Callable[[str], None] | None) -> Classifier:
        """Each network's converted IR (stages/openvino_engine.py) at the precision its features
        were made with, the head in NumPy: no TensorFlow, no Keras."""
        from stages import int8_sample, openvino_engine

        kernel, bias = _dense_weights(record.path)
        n = len(record.networks)
        md5s = record.weights_md5 or [""] * n
        samples = record.int8_samples or [""] * n
        files, compiled = [], {}
        for (name, recorded, scaling), made, sample in zip(_networks(record), md5s, samples,
                                                          strict=True):
            net = openvino_engine.Network(BACKBONES[name], record.width or 0, recorded, made,
                                          scaling)
            with _weights_of_the_model(record, name):
                # int8: quantized on the training images' sample (cached where it was made;
                # elsewhere made again from data/resized/train.h5, checked by its md5)
                files.append(openvino_engine.quantized_file(
                    net, sample, lambda s=sample: int8_sample.load(s), say) if sample
                    else openvino_engine.network_file(net, say))
        metas = [openvino_engine.meta(f) for f in files]
        dims = _check_dims(record, [int(m["dim"]) for m in metas], kernel)
        precisions = record.precision or ["float32"] * n
        k32, b32 = kernel.astype(np.float32), bias.astype(np.float32)

        def forward(batch: np.ndarray) -> list[Any]:
            size = len(batch)
            if size not in compiled:  # per batch size: a static shape compiles the fastest
                compiled[size] = [openvino_engine.Compiled(f, p, size)
                                  for f, p in zip(files, precisions, strict=True)]
            outs = [net.run(batch, maps=True) for net in compiled[size]]
            fused = np.concatenate([o[0] for o in outs], axis=1)
            probs = decision.probabilities_of_logits(fused @ k32 + b32).astype(np.float32)
            return [probs, fused, *(o[1] for o in outs)]

        return cls(record, forward, kernel, bias, dims, [bool(m["explainable"]) for m in metas])

    # --- the API -----------------------------------------------------------------------------

    def predict(self, items: Any) -> np.ndarray:
        """float32 (n, K) class probabilities of `items` (paths or a uint8 array; a folder's or
        zip's images in resize's order, by folder then name, as `inputs.entries` lists them)."""
        from stages.keras_extract import padded

        out = [np.zeros((0, len(self.classes)), np.float32)]
        for batch, size in batches(self.pixels_of(items)):
            out.append(np.asarray(self._forward(padded(batch, size))[0],
                                  np.float32)[:len(batch)])
        return np.concatenate(out)

    def cam(self, items: Any) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (n, K), maps float32 (n, width, width)): each image's class activation
        map of its predicted class, in logit units (stages/cam.py)."""
        from stages import cam

        probs, maps = [], []
        for e in self.explain_batches(self.pixels_of(items)):
            probs.append(e.probs)
            maps.append(cam.class_map(e.grids, self.width))
        if not probs:
            return (np.zeros((0, len(self.classes)), np.float32),
                    np.zeros((0, self.width, self.width), np.float32))
        return np.concatenate(probs), np.concatenate(maps)

    # --- the work ----------------------------------------------------------------------------

    def pixels_of(self, items: Any) -> np.ndarray:
        """`items` as uint8 (n, width, width, 3): an array as it is (checked), paths decoded
        as `resize` decodes them (stages/inputs.py)."""
        if isinstance(items, np.ndarray):
            self.check_pixels(items)
            return items
        from stages import inputs

        paths = [items] if isinstance(items, str | Path) else list(items)
        return inputs.load_all(paths, self.width)

    def check_pixels(self, pixels: np.ndarray) -> None:
        want = (self.width, self.width, 3)
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1:] != want:
            raise ModelError(
                f"images of {pixels.dtype} {pixels.shape}, but {self.record.path} takes uint8 "
                f"(n, {self.width}, {self.width}, 3) RGB: it was trained at width "
                f"{self.width}. Give paths (resized for it), or resize to {self.width} px")

    def explain_batches(self, pixels: np.ndarray, maps: bool = True) -> Iterator[Explained]:
        """`pixels` through the classifier in `batches`."""
        for batch, size in batches(pixels):
            yield self.explain(batch, size, maps)

    def explain(self, pixels: np.ndarray, size: int | None = None, maps: bool = True
                ) -> Explained:
        """One batch: probabilities, decisions and (`maps`) each network's map of the predicted
        class on its own grid. `size`: the batch shape to pad to."""
        from stages.keras_extract import padded

        self.check_pixels(pixels)
        n = len(pixels)
        probs, fused, *convs = (np.asarray(o)[:n] for o in
                                self._forward(padded(pixels, size or n)))
        probs = probs.astype(np.float32)
        predicted = decision.predicted(probs, self.threshold)
        # Two classes: one logit z for class 1, and class 0's is −z (p0 = σ(−z)).
        col = np.zeros(n, int) if self._kernel.shape[1] == 1 else predicted
        sign = np.where(predicted == 1, 1.0, -1.0) if self._kernel.shape[1] == 1 else np.ones(n)
        w = self._kernel[:, col].T * sign[:, None]  # (n, D): each image's class column
        bias = self._bias[col] * sign
        logits = np.einsum("nd,nd->n", fused.astype(np.float64), w) + bias
        grids: list[np.ndarray] = []
        if maps:
            self.check_explainable()
            starts = np.cumsum([0, *self._dims])
            for conv, lo, hi in zip(convs, starts[:-1], starts[1:], strict=True):
                grids.append(np.einsum("nhwc,nc->nhw", conv.astype(np.float64),
                                       w[:, lo:hi]).astype(np.float32))
        return Explained(probs, predicted, fused.astype(np.float32), logits, grids, bias)

    def check_explainable(self) -> None:
        """Class activation maps need every network's pooled features to go straight into the
        head: a ModelError naming the model and the fix where one does not (ConvNeXt)."""
        bad = [m for m, ok in zip(self.networks, self._explainable, strict=True) if not ok]
        if bad:
            raise ModelError(
                f"{self.record.path}: trained on {', '.join(bad)}, whose pooled features pass a "
                "normalisation layer before the head, so no class activation map adds up to its "
                "logit. Classify without --cam/--mistakes, or train without "
                f"{', '.join(bad)} in `fuse` for maps")

    def export(self, folder: str | Path) -> None:
        """A TensorFlow SavedModel at `folder` that decides as this classifier does.

        Its `serving_default` signature (also `loaded.serve(images)`) takes uint8 RGB
        (n, width, width, 3), resized as `resize` does (docs/stages.md, "The exported
        SavedModel"), and returns `probabilities` float32 (n, K), `predicted` int64 (the class
        index: two classes, 1 where p(class 1) >= the model's threshold, compared in float64
        as `decision.predicted` does; K classes, the most probable) and `predicted_class` (its
        name). The networks' input scaling, the networks, the pooling, the fusion and the head
        are inside; `assets/classifier.json` (EXPORT_JSON) keeps the classes, threshold, width
        and what the pixels must be, for whoever serves it.

        Saved with TensorFlow's own `tf.saved_model.save`, tracking the variables the function
        reads: Keras' `model.export` writes every weight twice (keras-team/keras#23553), 2× the
        file and the memory of every server that loads it. Written beside `folder` and swapped
        in (stages/outputs.py): an earlier export is replaced, a folder of anything else
        refused (stages/destinations.py), and a failed swap puts the earlier export back."""
        import tempfile

        import tensorflow as tf

        destinations.check_export_folder(folder)
        model = self.probs_model
        spec = tf.TensorSpec((None, self.width, self.width, 3), tf.uint8, name="images")
        classes = tf.constant(self.classes)
        threshold = tf.constant(float(self.threshold), tf.float64)
        two = len(self.classes) == 2

        @tf.function(input_signature=[spec])
        def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
            probs = model(images, training=False)
            if two:  # float32 p against the float64 threshold, as NumPy compares them
                predicted = tf.cast(tf.cast(probs[:, 1], tf.float64) >= threshold, tf.int64)
            else:
                predicted = tf.argmax(probs, axis=1, output_type=tf.int64)
            return {"probabilities": probs, "predicted": predicted,
                    "predicted_class": tf.gather(classes, predicted)}

        module = tf.Module()
        module.variables_read = [v.value for v in model.variables]  # the tf.Variables themselves
        module.serve = serve
        with tempfile.TemporaryDirectory() as meta, outputs.atomic_dir(folder) as tmp:
            json_path = Path(meta) / EXPORT_JSON
            json_path.write_text(json.dumps(self.export_metadata(), indent=2) + "\n")
            module.metadata = tf.saved_model.Asset(str(json_path))  # copied into assets/
            tf.saved_model.save(module, str(tmp), signatures={"serving_default": serve})

    def export_metadata(self) -> dict[str, Any]:
        """What `assets/classifier.json` of an export keeps: how to feed it and how it decides."""
        r = self.record
        return {
            "model": Path(r.path).name,
            "classes": self.classes,
            "threshold": float(self.threshold),
            "decision": ("predicted = 1 where probabilities[:, 1] >= threshold, else 0"
                         if len(self.classes) == 2 else
                         "predicted = the most probable class (threshold unused)"),
            "width": self.width,
            "input": {
                "dtype": "uint8", "shape": [None, self.width, self.width, 3], "channels": "RGB",
                "pixels": PIXELS.format(width=self.width)},
            "outputs": {"probabilities": "float32 (n, K), columns in the order of classes",
                        "predicted": "int64 (n,), the class index",
                        "predicted_class": "string (n,), its name"},
            "networks": self.networks,
            "network_input_scaling": r.preprocess or ["network"] * len(self.networks),
            "weights": r.weights,
            "weights_md5": r.weights_md5,
            "features_precision": r.precision,
            "temperature": r.temperature,
        }
