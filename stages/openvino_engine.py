"""OpenVINO as the engine of the extractors' networks on CPUs (`engine: openvino`,
docs/backends.md).

The network is the one TensorFlow runs (the registry's Keras constructor, the same weights, the
network's own input scaling on float32 pixels, global average pooling), wrapped so that it takes
uint8 pixels and returns two outputs, the pooled features and the last convolutional maps (for
`classify --cam`), converted once by `openvino.convert_model` (which takes the Keras model
directly) and saved as OpenVINO IR in a cache folder (`network_file`). The next extraction, and
`classify`, read the IR and never import TensorFlow; OpenVINO's own compile cache sits beside
it, so compiling is a lookup too.

Two pitfalls are handled here. OpenVINO computes in bfloat16 by default on a CPU that has it, so
`float32` sets its `INFERENCE_PRECISION_HINT` to f32 explicitly. And `ov.save_model` compresses
the weights to float16 unless told not to (an error of ~3e-3 in the features).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stages import h5io
from stages.backbones import Backbone
from stages.keras_extract import padded, prefetched

CACHE_ENV = "OPENVINO_IR_CACHE"  # where the converted networks live; default: CACHE_DEFAULT
CACHE_DEFAULT = Path("~/.cache/dvc-cats-dogs/openvino")
FORMAT = 1  # bump when what the IR holds changes: earlier conversions are not reused
# `precision` → OpenVINO's hint for what it computes in floating point (int8: the layers NNCF
# left unquantized, kept at float32)
HINTS = {"float32": "f32", "mixed_bfloat16": "bf16", "int8": "f32"}
META = "network.json"  # beside the IR: what it was converted from, its feature size, its maps


@dataclass(frozen=True)
class Network:
    """What the IR is converted from: everything that decides its weights and arithmetic."""

    backbone: Backbone
    width: int
    weights: str      # one network's entry (feature_files.weights_of: random ones name their seed)
    weights_md5: str  # the weight file's md5 ("" for ImageNet's download, random weights)
    preprocess: str = "network"

    def key(self) -> str:
        """The cache folder's name: the network, the width and a hash of everything else
        (Keras' and OpenVINO's versions included: either may convert otherwise)."""
        from importlib.metadata import version

        record = {"format": FORMAT, "network": self.backbone.name, "width": self.width,
                  "weights": self.weights, "weights_md5": self.weights_md5,
                  "preprocess": self.preprocess, "keras": version("keras"),
                  "openvino": version("openvino")}
        digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
        return f"{self.backbone.name}-{self.width}px-{digest[:16]}"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or CACHE_DEFAULT).expanduser()


def network_file(net: Network, say: Callable[[str], None] | None = None) -> Path:
    """The IR (`.xml`, its weights in the `.bin` beside it) of `net`, converted on the first
    call (TensorFlow and Keras build the network: seconds) and read from the cache after.
    `say`: told before a conversion."""
    folder = cache_dir() / net.key()
    return _cached(folder, lambda tmp: _convert(net, tmp),
                   f"converting {net.backbone.name} to OpenVINO once (cached in {folder})", say)


def quantized_file(net: Network, sample_md5: str, sample: Callable[[], np.ndarray],
                   say: Callable[[str], None] | None = None) -> Path:
    """The IR of `net` quantized to int8 by NNCF's post-training quantization on `sample()`
    (uint8 training images: stages/int8_sample.py, whose md5 is `sample_md5`), made once
    (minutes at 299 px) and cached beside the float32 IR it is made from."""
    folder = cache_dir() / f"{net.key()}-int8-{sample_md5[:16]}"
    return _cached(folder, lambda tmp: _quantize(network_file(net, say), sample_md5, sample(),
                                                 tmp),
                   f"quantizing {net.backbone.name} to int8 once, on the training images' "
                   f"sample (NNCF; cached in {folder})", say)


def _cached(folder: Path, make: Callable[[Path], None], line: str,
            say: Callable[[str], None] | None) -> Path:
    """`folder`/network.xml, made by `make(tmp)` in a temporary folder renamed into place
    whole (a killed run leaves no IR that looks finished; another process may win the race)."""
    xml = folder / "network.xml"
    if xml.is_file() and (folder / META).is_file():
        return xml
    if say is not None:
        say(line)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        make(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not xml.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return xml


def _quantize(xml: Path, sample_md5: str, pixels: np.ndarray, folder: Path) -> None:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(xml)
    data = nncf.Dataset([pixels[i:i + 1] for i in range(len(pixels))])
    quantized = nncf.quantize(model, data, subset_size=len(pixels))
    ov.save_model(quantized, folder / "network.xml", compress_to_fp16=False)
    (folder / META).write_text(json.dumps(
        {**meta(xml), "int8_sample": sample_md5, "int8_images": len(pixels)}, indent=1) + "\n")


def _convert(net: Network, folder: Path) -> None:
    from stages import quiet

    quiet.tensorflow()  # Keras builds the network on TensorFlow, which OpenVINO converts
    import keras
    import openvino as ov

    from stages.backbones import maps_and_pooled, preprocessing
    from stages.feature_files import weights_from

    weights, seed = weights_from(net.weights)
    pixels = keras.Input((net.width, net.width, 3), dtype="uint8", name="pixels")
    x = preprocessing(net.backbone, net.preprocess)(keras.ops.cast(pixels, "float32"))
    both, explainable = maps_and_pooled(net.backbone, net.width, weights, seed)
    maps, pooled = both(x)
    model = keras.Model(pixels, [keras.ops.cast(pooled, "float32"),
                                 keras.ops.cast(maps, "float32")], name=f"{net.backbone.name}_ov")
    with warnings.catch_warnings():  # Keras' note on the traced input's name: harmless here
        warnings.filterwarnings("ignore", "The structure of `inputs` doesn't match")
        converted = ov.convert_model(model)
    ov.save_model(converted, folder / "network.xml", compress_to_fp16=False)
    (folder / META).write_text(json.dumps({
        "network": net.backbone.name, "width": net.width, "weights": net.weights,
        "weights_md5": net.weights_md5, "preprocess": net.preprocess,
        "dim": int(pooled.shape[-1]), "explainable": explainable}, indent=1) + "\n")


def meta(xml: Path) -> dict[str, Any]:
    """What `network_file` recorded beside the IR: `dim` (the feature size), `explainable`."""
    return json.loads((xml.parent / META).read_text())


class Compiled:
    """The IR compiled for the CPU at one batch size: `run(batch)` → [pooled (n, D)], with
    `maps` also the last convolutional maps (n, h, w, C), float32; a short batch is padded to
    the compiled size."""

    def __init__(self, xml: Path, precision: str, batch_size: int) -> None:
        import openvino as ov

        core = ov.Core()
        core.set_property({"CACHE_DIR": str(cache_dir() / "compiled")})
        model = core.read_model(xml)
        width = int(model.inputs[0].get_partial_shape()[1].get_length())
        model.reshape([batch_size, width, width, 3])  # one static shape: the fastest kernels
        self.batch_size = batch_size
        self.compiled = core.compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": HINTS[precision]})
        self.request = self.compiled.create_infer_request()

    def run(self, batch: np.ndarray, maps: bool = False) -> list[np.ndarray]:
        n = len(batch)
        out = self.request.infer([padded(batch, self.batch_size)])
        return [np.array(out[i][:n], np.float32) for i in ((0, 1) if maps else (0,))]


def feature_batches(net: Compiled, images: h5py.Dataset) -> Iterator[np.ndarray]:
    """float32 features of `images` (uint8, N×W×W×3), in row order, one batch at a time, the
    next batch read from HDF5 while the CPU works on this one."""
    for batch in prefetched(h5io.iter_batches(images, net.batch_size)):
        yield net.run(batch)[0]


def _capabilities() -> list[str]:
    import openvino as ov

    return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def bf16_supported() -> bool:
    """OpenVINO's own word on whether this CPU computes in bfloat16 (AVX512_BF16 or AMX)."""
    return "BF16" in _capabilities()


def int8_supported() -> bool:
    """OpenVINO's own word on whether this CPU runs int8 networks (every x86-64 CPU it takes)."""
    return "INT8" in _capabilities()
