"""What a trained model records of how it was made: the HDF5 attributes `train_head` writes into
`models/model_2.h5`, read back by `predict` and the classify tool (stages/classify.py).

A model file alone is enough to score new images: the classes name its outputs, the networks
and their weights say which feature extractors to rebuild, `width` how to resize an image for
them, the threshold how to decide (the temperature is in the Dense weights already).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import h5py

from stages.cli import MissingInput

RETRAIN = "Run `dvc repro train_head` (it records them)."


@dataclass(frozen=True)
class ModelRecord:
    path: str
    classes: list[str]     # index = output
    networks: list[str]    # the fused features' networks, in column order
    weights: list[str]     # per network, what initialised it (feature_files.weights_of)
    preprocess: list[str]  # per network, its input scaling (params.PREPROCESS); [] from before
    precision: list[str]   # per network, the `precision` it was extracted at; [] from before
    weights_md5: list[str]  # per network, its weight file's md5 ("": none); [] from before
    width: int | None      # the side images were resized to; None: a model from before
    threshold: float       # two classes: class 1 where p(class 1) reaches it
    temperature: float     # divided into the Dense weights already; 1.0 without calibration
    engines: list[str] = field(default_factory=list)  # per network, the `engine`; [] from before
    int8_samples: list[str] = field(default_factory=list)  # per network, its int8 sample's md5

    @property
    def engine(self) -> str:
        """What ran the networks ("tensorflow" for a model from before `engine` existed)."""
        return "openvino" if self.engines and set(self.engines) == {"openvino"} else "tensorflow"


def read(path: str | os.PathLike[str]) -> ModelRecord:
    """The record of the model at `path`; MissingInput where the file or its classes are
    missing. Attributes a model from before lacks take their old meaning (threshold 0.5)."""
    if not os.path.isfile(path):
        raise MissingInput(f"{path}: not found. Run `dvc repro train_head` first, or `dvc pull "
                           f"{path}` (a teammate's model)")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise MissingInput(f"{path}: not a model file train_head writes ({e}). Give "
                           "models/model_2.h5 or a copy of it") from None
    with f:
        a = f.attrs
        if "classes" not in a:
            raise MissingInput(f"{path}: records no class names. {RETRAIN}")
        return ModelRecord(
            path=str(path), classes=[str(c) for c in a["classes"]],
            networks=[str(n) for n in a.get("networks", [])],
            weights=[str(w) for w in a.get("weights", [])],
            preprocess=[str(p) for p in a.get("preprocess", [])],
            precision=[str(p) for p in a.get("precision", [])],
            weights_md5=[str(m) for m in a.get("weights_md5", [])],
            engines=[str(e) for e in a.get("engine", [])],
            int8_samples=[str(m) for m in a.get("int8_sample", [])],
            width=int(a["width"]) if a.get("width", 0) else None,
            threshold=float(a.get("threshold", 0.5)),
            temperature=float(a.get("temperature", 1.0)))
