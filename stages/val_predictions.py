"""`reports/val/predictions.csv`, the validation predictions `train_head` writes
(evaluation.write_predictions), read back by the classify tool's `--mistakes`, and the check that
they are the predictions of the model it was given.

The picture of mistakes picks its rows by the CSV's probabilities and captions them with the
given model's: both must be one model's, or it shows one model's mistakes as another's.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from stages import cli
from stages.cli import MissingInput, UserError

# How far the given model's probabilities of validation images may lie from the CSV's and
# still be the same model's. Its features extracted at float32 on a CPU, the tool computes the
# CSV's probabilities to float32 rounding (1e-6; the CSV's 6 decimals add 5e-7). Extracted on a
# GPU, TensorFlow's TF32 matrix products round to 10 bits of mantissa, as mixed_float16 does;
# mixed_bfloat16 to 8 bits, and its features lie within 2.4 % of float32's (docs/backends.md).
# That moves probabilities by about 1e-3 (the tool's own estimate), and, we take it, by no more
# than a ±1 change of the pixels does: up to 0.02 (TensorFlow's fast JPEG DCT, issue 31's
# trial). Hence 0.01 for features of 10 bits or more, 0.05 for bfloat16's 8. Another model
# (another head's training, other features) moves the rows it is least sure of by tenths,
# which are compared too (`check_rows`).
TOLERANCE = {"float32": 0.01, "mixed_float16": 0.01}
TOLERANCE_REDUCED = 0.05  # mixed_bfloat16, and any precision not named above
CHECKED_UNSURE = 4  # rows the model was least sure of, compared besides the pictured ones


class ModelMismatch(UserError, ValueError):
    """The validation predictions are not those of the model given."""


def read(path: str | os.PathLike[str], classes: list[str]
         ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(paths, probabilities float64 (n, K), true labels) of the CSV at `path`, for a model of
    `classes`. Probabilities as written: 6 decimals, or every digit (Python's repr)."""
    if not Path(path).is_file():
        raise MissingInput(f"{path}: not found; `train_head` writes it. Run `dvc repro "
                           "train_head` (or `dvc pull`)")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise MissingInput(f"{path}: holds no validation rows. Run `dvc repro train_head`")
    header = rows[0]
    columns = ["label"] if len(classes) == 2 else classes
    if header[1:1 + len(columns)] != columns or "true_class" not in header:
        raise MissingInput(f"{path}: its columns {header} are not those of a model with "
                           f"classes {classes}. Run `dvc repro train_head`")
    truth = header.index("true_class")
    try:
        p = np.array([[float(v) for v in r[1:1 + len(columns)]] for r in rows[1:]], np.float64)
    except ValueError as e:
        raise MissingInput(f"{path}: {e}. Run `dvc repro train_head`") from None
    probs = np.concatenate([1 - p, p], axis=1) if len(classes) == 2 else p
    unknown = sorted({r[truth] for r in rows[1:]} - set(classes))
    if unknown:
        raise MissingInput(f"{path}: true classes {unknown} are not the model's {classes}. "
                           "Run `dvc repro train_head`")
    labels = np.array([classes.index(r[truth]) for r in rows[1:]], np.int64)
    return [r[0] for r in rows[1:]], probs, labels


def saved_probs(path: str | os.PathLike[str], classes: list[str]) -> np.ndarray | None:
    """The saved head's own probabilities of the CSV's rows, float64 (n, K), where train_head
    ran with `folds` (columns `model_label`, or `model_<class>` for K classes: its `label`
    columns are then out of fold, from heads other than the saved one); None without them."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    names = ["model_label"] if len(classes) == 2 else [f"model_{c}" for c in classes]
    if not set(names) <= set(rows[0]):
        return None
    at = [rows[0].index(n) for n in names]
    try:
        p = np.array([[float(r[i]) for i in at] for r in rows[1:]], np.float64)
    except ValueError as e:
        raise MissingInput(f"{path}: {e}. Run `dvc repro train_head`") from None
    return np.concatenate([1 - p, p], axis=1) if len(classes) == 2 else p


def check_rows(probs: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """The rows whose probabilities are compared with the model's: the `shown` ones (the
    confident mistakes: near 0 or 1, where two models can agree), then the CHECKED_UNSURE
    others the CSV is least sure of (where two models differ most)."""
    pictured = set(shown.tolist())
    unsure = [r for r in np.argsort(probs.max(axis=1), kind="stable") if r not in pictured]
    return np.array([*shown.tolist(), *unsure[:CHECKED_UNSURE]], np.int64)


def tolerance(precision: list[str]) -> float:
    """TOLERANCE for the precisions a model's features were extracted at."""
    return max((TOLERANCE.get(p, TOLERANCE_REDUCED) for p in precision), default=0.01)


def check_same_model(path: str | os.PathLike[str], model: str, csv_probs: np.ndarray,
                     model_probs: np.ndarray, names: list[str], precision: list[str]) -> None:
    """ModelMismatch, naming both files and the fix, where `model` gives the CSV's rows other
    probabilities than the CSV holds (beyond `tolerance`)."""
    diff = np.abs(np.asarray(model_probs, np.float64) - csv_probs).max(axis=1)
    worst = int(np.argmax(diff)) if len(diff) else 0
    if len(diff) and diff[worst] > tolerance(precision):
        raise ModelMismatch(
            f"{path}: holds the validation predictions of another model than {model} (for "
            f"{names[worst]} it says {cli.some([f'{v:.4f}' for v in csv_probs[worst]])}, "
            f"{model} gives {cli.some([f'{v:.4f}' for v in model_probs[worst]])}), so the "
            f"picture would show one model's mistakes with the other's maps. Give --model the "
            f"model that wrote it (train_head writes models/model_2.h5 beside it), or "
            f"--predictions the predictions of {model} (`dvc repro train_head` writes both)")
