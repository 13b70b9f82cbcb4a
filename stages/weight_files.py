"""Weight files that are not Keras' own ImageNet files (RadImageNet's, a user's `save_weights`),
loaded into a network built without its top, all of it or not at all.

Keras loads every format (`model.load_weights`): legacy HDF5, weights alone or a whole model
(`model.save("x.h5")`, RadImageNet's files), in layer order; Keras 3's `.weights.h5` and
`.keras`, by its own per-class layer paths. What Keras does not do is refuse a file that fits
only in part: a `.weights.h5` with a top loads without a word (its extra layers ignored), and a
legacy file for another network stops with a message that names no layer. So each file is first
compared with the network, layer by layer, and a file that does not fit stops with one line
naming the file, the network and the first layer that does not match.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py

from stages.cli import UserError

Layer = tuple[str, list[tuple[int, ...]]]  # a layer's name and its weights' shapes


class WeightFileError(UserError, ValueError):
    """A weight file that does not fit the network."""


def load(model: Any, network: str, path: str) -> None:
    """Load `path` into `model` (`network`, built without its top), or raise WeightFileError."""
    if path.endswith((".weights.h5", ".keras")):
        _check_keras3(model, network, path)
        model.load_weights(path)
        return
    _load_legacy(model, network, path)


def _mismatch(path: str, network: str, what: str) -> WeightFileError:
    return WeightFileError(
        f"{path} does not fit {network} without its top: {what}. Give it a file of this "
        "network's layers without the classifier on top (docs/networks.md, 'Other weights'), "
        "or set its entry of weights back")


# --- legacy HDF5: Keras' own layout, weights alone or under a whole model's `model_weights` ---

def _load_legacy(model: Any, network: str, path: str) -> None:
    from keras.src.legacy.saving import legacy_h5_format

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise WeightFileError(f"{path}: not an HDF5 file Keras can load ({e})") from None
    with f:
        group = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f \
            else f
        if "layer_names" not in group.attrs:
            raise _mismatch(path, network, "it holds no Keras layers (no 'layer_names')")
        saved, own = _saved_layers(group), _model_layers(model)
        if sorted(n for n, _ in saved) == sorted(n for n, _ in own):
            # The same names: each layer's weights by its name, whatever the order.
            shapes = dict(saved)
            for name, wanted in own:
                if shapes[name] != wanted:
                    raise _mismatch(path, network, f"its layer {name!r} "
                                    f"{_differ(shapes[name], wanted)}")
            legacy_h5_format.load_weights_from_hdf5_group_by_name(group, model)
            return
        # Other names (Keras numbers unnamed layers per process): in order, shapes checked.
        for k, ((name, shapes), (own_name, wanted)) in enumerate(zip(saved, own, strict=False)):
            if shapes != wanted:
                raise _mismatch(path, network, f"its layer #{k} {name!r} "
                                f"{_differ(shapes, wanted)} (layer #{k} {own_name!r})")
        if len(saved) > len(own):
            raise _mismatch(path, network, f"its layer #{len(own)} {saved[len(own)][0]!r} "
                            f"comes after the network's last ({len(saved)} layers with weights, "
                            f"the network {len(own)}: a file with its top?)")
        if len(saved) < len(own):
            raise _mismatch(path, network, f"it ends after {len(saved)} layers with weights, "
                            f"before the network's layer #{len(saved)} {own[len(saved)][0]!r}")
        legacy_h5_format.load_weights_from_hdf5_group(group, model)


def _saved_layers(group: h5py.Group) -> list[Layer]:
    """The file's layers that hold weights, in its order, as Keras' legacy loader reads them."""
    from keras.src.legacy.saving import legacy_h5_format

    read = legacy_h5_format.load_attributes_from_hdf5_group
    out = []
    for name in read(group, "layer_names"):
        layer = group[name]
        shapes = [tuple(layer[w].shape) for w in read(layer, "weight_names")]
        if shapes:
            out.append((str(name), shapes))
    return out


def _model_layers(model: Any) -> list[Layer]:
    """The network's layers that hold weights, in order (trainable first, as saved)."""
    out = []
    for layer in model.layers:
        weights = layer.trainable_weights + layer.non_trainable_weights
        if weights:
            out.append((layer.name, [tuple(w.shape) for w in weights]))
    return out


def _differ(saved: list[tuple[int, ...]], wanted: list[tuple[int, ...]]) -> str:
    def shapes(ss: list[tuple[int, ...]]) -> str:
        return ", ".join("×".join(map(str, s)) or "scalar" for s in ss)

    return f"holds weights of shapes {shapes(saved)} where the network's has {shapes(wanted)}"


# --- Keras 3: `.weights.h5`, and `.keras` (a zip holding model.weights.h5) -------------------

def _check_keras3(model: Any, network: str, path: str) -> None:
    """Compare the file's variables with those Keras itself writes for the network (its own
    `save_weights`, into a temporary file): the same paths, the same shapes, nothing more."""
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "network.weights.h5"
        model.save_weights(ref)
        with h5py.File(ref, "r") as f:
            wanted = dict(_variables(f["layers"]))
    try:
        with _weights_h5(path) as f:
            saved = dict(_variables(f["layers"])) if "layers" in f else {}
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise WeightFileError(f"{path}: not a Keras weights file ({e})") from None
    for layer in sorted({p.rsplit("/vars/", 1)[0] for p in {*wanted, *saved}}):
        mine = [wanted[p] for p in sorted(wanted) if p.startswith(f"{layer}/vars/")]
        theirs = [saved[p] for p in sorted(saved) if p.startswith(f"{layer}/vars/")]
        if mine == theirs:
            continue
        raise _mismatch(path, network, f"its layer {layer!r} "
                        + ("is not in the network (a file with its top?)" if not mine else
                           "is missing" if not theirs else _differ(theirs, mine)))


def _variables(group: h5py.Group) -> Iterator[tuple[str, tuple[int, ...]]]:
    found: list[tuple[str, tuple[int, ...]]] = []
    group.visititems(lambda name, obj: found.append((name, tuple(obj.shape)))
                     if isinstance(obj, h5py.Dataset) else None)
    return iter(found)


@contextlib.contextmanager
def _weights_h5(path: str) -> Iterator[h5py.File]:
    """The HDF5 file of weights: the file itself, or the one inside a `.keras` zip."""
    if path.endswith(".keras"):
        with zipfile.ZipFile(path) as z:
            data = io.BytesIO(z.read("model.weights.h5"))
        with h5py.File(data, "r") as f:
            yield f
    else:
        with h5py.File(path, "r") as f:
            yield f
