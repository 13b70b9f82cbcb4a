"""Load and validate params.yaml: every stage calls `load_params()` before any heavy work.

The whole file is checked, not only the keys a stage reads, so a typo anywhere stops the first
stage that runs with a message that names the key, the value and what is allowed.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from stages.cli import ParamsError

PARAMS_FILE = "params.yaml"
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "int8")
# What runs the extractors' networks: TensorFlow (Keras' backend: CPUs and GPUs) or OpenVINO
# (CPUs; docs/backends.md).
ENGINES = ("tensorflow", "openvino")
CLASS_WEIGHTS = ("none", "balanced")
CALIBRATIONS = ("none", "temperature")
# The registry's network names (stages/backbones.py, which checks that it knows the same): here
# too, so that params are checked without importing the registry's Keras modules.
NETWORKS = ("inception_v3", "xception", "vgg16", "resnet50", "resnet50_v2", "densenet121",
            "inception_resnet_v2", "efficientnet_v2_b0", "convnext_tiny")
# The folder of local weights that dvc.yaml tracks (see docs/data.md, "Weights"); not named
# `weights`, which would clash with the param of that name in `dvc exp show`.
WEIGHTS_DIR = "keras_weights"
WEIGHTS = ("imagenet", "none", WEIGHTS_DIR)
# The input scaling a weight file's network was trained with (docs/networks.md, "Other
# weights"): `network` is the network's own `preprocess_input`, what ImageNet files expect.
PREPROCESS = ("network", "scale_0_1", "scale_-1_1", "imagenet_mean_std")
# Networks that scale their input inside (their `preprocess_input` is the identity): another
# scaling before that would scale twice.
SCALES_INSIDE = ("efficientnet_v2_b0", "convnext_tiny")
WEIGHT_FILE_SUFFIXES = (".h5", ".hdf5", ".keras")  # what Keras' load_weights opens

__all__ = ["DEFAULTS", "SPECS", "NetworkWeights", "ParamsError", "load_params",
           "network_weights", "validate"]


@dataclass(frozen=True)
class Spec:
    types: tuple[type, ...]
    default: Any
    check: Callable[[Any], bool]
    allowed: str
    # For a value of the right type: the problems with it, each naming its own part (a
    # mapping's entry), instead of `check` and `allowed`.
    problems: Callable[[Any], list[str]] | None = None


def _between(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False
             ) -> Callable[[Any], bool]:
    """A range check that refuses NaN and infinities (YAML's .nan and .inf are floats)."""
    def check(v: Any) -> bool:
        # An int is always finite, and math.isfinite cannot take one of 400 digits.
        return ((isinstance(v, int) or math.isfinite(v)) and (lo < v if lo_open else lo <= v)
                and (v < hi if hi_open else v <= hi))
    return check


def _regex(v: str) -> bool:
    try:
        re.compile(v)
    except re.error:
        return False
    return True


_TARGET = re.compile(r"^(sensitivity|specificity):(\d*\.?\d+)$")


def _threshold(v: Any) -> bool:
    """A number in (0, 1), `youden`, or `sensitivity:X` / `specificity:X` with X in (0, 1]."""
    if isinstance(v, str):
        m = _TARGET.match(v)
        return v == "youden" or (m is not None and 0 < float(m.group(2)) <= 1)
    return _between(0, 1, lo_open=True, hi_open=True)(v)


def _networks(v: list[Any]) -> bool:
    return (bool(v) and all(isinstance(n, str) and n in NETWORKS for n in v)
            and len(set(v)) == len(v))


WEIGHTS_ALLOWED = (f"one of {WEIGHTS} ('{WEIGHTS_DIR}': the folder of local weight files), or a "
                   "mapping of network to one of these, to a file "
                   f"'{WEIGHTS_DIR}/<name>.h5', or to {{file: {WEIGHTS_DIR}/<name>.h5, "
                   f"preprocess: <one of {', '.join(PREPROCESS)}>}} (docs/networks.md, "
                   "'Other weights')")


def _weights_problems(v: Any) -> list[str]:
    """`weights` as one value for all networks, or a mapping per network."""
    if isinstance(v, str):
        return [] if v in WEIGHTS else [f"'weights' is {v!r}; it must be {WEIGHTS_ALLOWED}"
                                        f"{_did_you_mean(v, WEIGHTS)}"]
    problems = []
    for net, entry in v.items():
        if net not in NETWORKS:
            problems.append(f"'weights' names the network {net!r}; networks: "
                            f"{', '.join(NETWORKS)}{_did_you_mean(net, NETWORKS)}")
        else:
            problems += _entry_problems(f"weights.{net}", net, entry)
    return problems


def _entry_problems(key: str, net: str, entry: Any) -> list[str]:
    """One network's entry: a `WEIGHTS` value, a keras_weights/ file, or {file, preprocess}."""
    if isinstance(entry, str):
        if entry in WEIGHTS or _weight_file(entry):
            return []
        return [f"'{key}' is {entry!r}; it must be one of {WEIGHTS} or a file "
                f"'{WEIGHTS_DIR}/<name>' ending in {', '.join(WEIGHT_FILE_SUFFIXES)} (DVC tracks "
                f"local weights only in {WEIGHTS_DIR}/){_did_you_mean(entry, WEIGHTS)}"]
    if not isinstance(entry, Mapping):
        return [f"'{key}' is {entry!r}; it must be a string or {{file: ..., preprocess: ...}}"]
    problems = [f"'{key}' has the key {k!r}; it takes 'file' and 'preprocess'"
                f"{_did_you_mean(k, ('file', 'preprocess'))}" for k in entry
                if k not in ("file", "preprocess")]
    file, preprocess = entry.get("file"), entry.get("preprocess", "network")
    if not (isinstance(file, str) and _weight_file(file)):
        problems.append(f"'{key}.file' is {file!r}; it must be a file '{WEIGHTS_DIR}/<name>' "
                        f"ending in {', '.join(WEIGHT_FILE_SUFFIXES)}")
    if preprocess not in PREPROCESS:
        problems.append(f"'{key}.preprocess' is {preprocess!r}; it must be one of {PREPROCESS}"
                        f"{_did_you_mean(preprocess, PREPROCESS)}")
    elif preprocess != "network" and net in SCALES_INSIDE:
        problems.append(f"'{key}.preprocess' is {preprocess!r}, but {net} scales its input "
                        "inside the network; it must be 'network'")
    return problems


def _weight_file(v: str) -> bool:
    """A file path inside keras_weights/ (the folder DVC tracks), in a format Keras loads."""
    p = PurePosixPath(v)
    return (not p.is_absolute() and len(p.parts) >= 2 and p.parts[0] == WEIGHTS_DIR
            and ".." not in p.parts and "\\" not in v and v.endswith(WEIGHT_FILE_SUFFIXES))


@dataclass(frozen=True)
class NetworkWeights:
    """One network's entry of `weights`: `imagenet`, `none`, `keras_weights` (Keras' own file
    in that folder) or the path of another file there, and the input scaling it expects."""

    weights: str
    preprocess: str = "network"


def network_weights(weights: str | Mapping[str, Any], network: str) -> NetworkWeights:
    """A validated `weights` param's entry for `network` (a network a mapping leaves out takes
    ImageNet's)."""
    entry = weights if isinstance(weights, str) else weights.get(network, "imagenet")
    if isinstance(entry, str):
        return NetworkWeights(entry)
    return NetworkWeights(entry["file"], entry.get("preprocess", "network"))


# Every bound is what the code can take: `seed` seeds NumPy and TensorFlow, which take 32 bits;
# `width` beyond 1024 makes a 25,000-image train.h5 of 78 GB; a learning rate above 10 only
# ever diverges.
SPECS: dict[str, Spec] = {
    "train_data": Spec((str,), "data/raw/train", bool, "a non-empty path to a folder or .zip"),
    "test_data": Spec((str,), "data/raw/test", bool, "a non-empty path to a folder or .zip"),
    "width": Spec((int,), 299, _between(75, 1024),
                  "an integer from 75 (the smallest both networks accept) to 1024"),
    "weights": Spec((str, dict), "imagenet", lambda v: not _weights_problems(v),
                    WEIGHTS_ALLOWED, _weights_problems),
    "extract_batch_size": Spec((int,), 32, _between(1, 4096), "an integer from 1 to 4096"),
    "precision": Spec((str,), "float32", lambda v: v in PRECISIONS, f"one of {PRECISIONS}"),
    "engine": Spec((str,), "tensorflow", lambda v: v in ENGINES,
                   f"one of {ENGINES} (docs/backends.md)"),
    "dropout": Spec((int, float), 0.5, _between(0, 1, hi_open=True), "a number in [0, 1)"),
    "learning_rate": Spec((int, float), 0.001, _between(0, 10, lo_open=True),
                          "a number in (0, 10]"),
    "batch_size": Spec((int,), 8, _between(1, 65536), "an integer from 1 to 65536"),
    "epochs": Spec((int,), 30, _between(1, 100_000), "an integer from 1 to 100000"),
    "val_split": Spec((int, float), 0.2, _between(0, 1, True, True), "a number in (0, 1)"),
    "folds": Spec((int,), 0, lambda v: v == 0 or 2 <= v <= 20,
                  "0 (one validation split by val_split) or an integer from 2 to 20"),
    "seed": Spec((int,), 2017, _between(0, 2**32 - 1), "an integer from 0 to 4294967295"),
    "clip": Spec((int, float), 0.005, _between(0, 0.5, hi_open=True), "a number in [0, 0.5)"),
    "group_pattern": Spec((str,), "", _regex,
                          "a regular expression (its first group names an image's group, e.g. "
                          "'^(person\\d+)_'), or \"\" for no groups"),
    "class_weight": Spec((str,), "none", lambda v: v in CLASS_WEIGHTS, f"one of {CLASS_WEIGHTS}"),
    "threshold": Spec((int, float, str), 0.5, _threshold,
                      "a number in (0, 1), 'youden', or 'sensitivity:X' / 'specificity:X' with "
                      "X in (0, 1] (docs/medical.md, 'Choosing the operating point')"),
    "calibrate": Spec((str,), "none", lambda v: v in CALIBRATIONS, f"one of {CALIBRATIONS}"),
    "fuse": Spec((list,), ["inception_v3", "xception"], _networks,
                 f"a list of different networks, each one of {', '.join(NETWORKS)}"),
}

DEFAULTS: dict[str, Any] = {k: s.default for k, s in SPECS.items()}
# for "did you mean":
CHOICES = {"weights": WEIGHTS, "precision": PRECISIONS, "engine": ENGINES,
           "class_weight": CLASS_WEIGHTS, "calibrate": CALIBRATIONS, "fuse": NETWORKS}


def validate(raw: Mapping[str, Any], source: str = PARAMS_FILE) -> dict[str, Any]:
    """Return a complete params dict (defaults filled in) or raise ParamsError naming the key."""
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{source}: expected a mapping of key: value, got {type(raw).__name__}")
    problems = []
    for key in raw:
        if key not in SPECS:
            close = difflib.get_close_matches(str(key), SPECS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            # `dvc exp run -S +key=…` adds a key and no `-S` removes one: say how.
            problems.append(f"unknown key '{key}'.{hint} Delete its line from {source} (or "
                            f"`git checkout {source}` to drop every uncommitted change); known "
                            f"keys: {', '.join(SPECS)}")
    params = dict(DEFAULTS)
    for key, spec in SPECS.items():
        if key not in raw:
            continue
        value = raw[key]
        # bool is an int subclass in Python; `epochs: true` is a typo, not 1.
        ok_type = isinstance(value, spec.types) and not isinstance(value, bool)
        if ok_type and spec.problems is not None:
            problems += spec.problems(value)
        elif not ok_type or not spec.check(value):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:40] + "…"
            problems.append(f"'{key}' is {shown}; it must be {spec.allowed}"
                            f"{_did_you_mean(value, CHOICES.get(key, ()))}")
        params[key] = value
    if not problems and params["engine"] == "openvino" and params["precision"] == "mixed_float16":
        problems.append("'precision' is 'mixed_float16', a GPU's, but 'engine' is 'openvino', "
                        "which runs on CPUs: use float32, mixed_bfloat16 or int8 with it, or "
                        "engine tensorflow on a GPU")
    if not problems and params["engine"] != "openvino" and params["precision"] == "int8":
        problems.append("'precision' is 'int8', which OpenVINO runs: set 'engine' to 'openvino' "
                        "too (`dvc exp run -S engine=openvino -S precision=int8`; "
                        "docs/backends.md)")
    if problems:
        raise ParamsError(f"{source}: " + "; ".join(problems))
    return params


def _did_you_mean(value: Any, choices: Iterable[str]) -> str:
    """A suggestion for a misspelt choice, or for the misspelt names in a list."""
    words = value if isinstance(value, list) else [value]
    close = [(w, m[0]) for w in words if isinstance(w, str) and w not in choices
             for m in [difflib.get_close_matches(w, list(choices), n=1)] if m]
    return "".join(f" (did you mean '{m}'?)" if len(words) == 1 and not isinstance(value, list)
                   else f" ('{w}': did you mean '{m}'?)" for w, m in close)


def load_params(path: str | os.PathLike[str] = PARAMS_FILE,
                keys: Iterable[str] | None = None) -> dict[str, Any]:
    """Read params.yaml as DVC reads it (ruamel.yaml's safe loader: YAML 1.2, where `3e-4` is a
    number, as `dvc exp show` prints it), then validate all of it. `keys`: the params the stage
    declares (its `params:` in dvc.yaml); only these are returned, so that reading another is a
    KeyError, not a param DVC does not know the stage depends on."""
    from ruamel.yaml import YAML
    from ruamel.yaml import YAMLError as RuamelError

    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: not found; run the stage from the repository root")
    try:
        raw = YAML(typ="safe").load(path.read_text()) or {}
    except RuamelError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    params = validate(raw, str(path))
    return params if keys is None else {k: params[k] for k in keys}
