"""Load and validate params.yaml: every stage calls `load_params()` before any heavy work.

The whole file is checked, not only the keys a stage reads, so a typo anywhere stops the first
stage that runs with a message that names the key, the value and what is allowed.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = "params.yaml"
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


class ParamsError(ValueError):
    """A value in params.yaml is unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class Spec:
    types: tuple[type, ...]
    default: Any
    check: Callable[[Any], bool]
    allowed: str


def _positive(v: Any) -> bool:
    return v > 0


SPECS: dict[str, Spec] = {
    "train_data": Spec((str,), "data/raw/train", bool, "a non-empty path to a folder or .zip"),
    "test_data": Spec((str,), "data/raw/test", bool, "a non-empty path to a folder or .zip"),
    "width": Spec((int,), 299, lambda v: v >= 75, "an integer >= 75 (smallest both nets accept)"),
    "weights": Spec((str,), "imagenet", bool, "'imagenet', 'none', or a folder of notop .h5 files"),
    "extract_batch_size": Spec((int,), 32, _positive, "an integer >= 1"),
    "precision": Spec((str,), "float32", lambda v: v in PRECISIONS, f"one of {PRECISIONS}"),
    "dropout": Spec((int, float), 0.5, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "learning_rate": Spec((int, float), 0.001, _positive, "a number > 0"),
    "batch_size": Spec((int,), 8, _positive, "an integer >= 1"),
    "epochs": Spec((int,), 30, _positive, "an integer >= 1"),
    "val_split": Spec((int, float), 0.2, lambda v: 0 < v < 1, "a number in (0, 1)"),
    "seed": Spec((int,), 2017, lambda v: v >= 0, "an integer >= 0"),
    "clip": Spec((int, float), 0.005, lambda v: 0 <= v < 0.5, "a number in [0, 0.5)"),
}

DEFAULTS: dict[str, Any] = {k: s.default for k, s in SPECS.items()}


def validate(raw: Mapping[str, Any], source: str = PARAMS_FILE) -> dict[str, Any]:
    """Return a complete params dict (defaults filled in) or raise ParamsError naming the key."""
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{source}: expected a mapping of key: value, got {type(raw).__name__}")
    problems = []
    for key in raw:
        if key not in SPECS:
            close = difflib.get_close_matches(str(key), SPECS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            problems.append(f"unknown key '{key}'.{hint} Known keys: {', '.join(SPECS)}")
    params = dict(DEFAULTS)
    for key, spec in SPECS.items():
        if key not in raw:
            continue
        value = raw[key]
        # bool is an int subclass in Python; `epochs: true` is a typo, not 1.
        ok_type = isinstance(value, spec.types) and not isinstance(value, bool)
        if not ok_type or not spec.check(value):
            problems.append(f"'{key}' is {value!r}; it must be {spec.allowed}")
        params[key] = value
    if problems:
        raise ParamsError(f"{source}: " + "; ".join(problems))
    return params


def load_params(path: str | os.PathLike[str] = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: not found; run the stage from the repository root")
    with path.open() as f:
        raw = yaml.safe_load(f) or {}
    return validate(raw, str(path))
