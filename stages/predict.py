"""Stage `predict`: the checkpointed head on the test features → Kaggle `pred.csv`.

Probabilities are clipped to [clip, 1 − clip]: log loss punishes a confident mistake without
bound, and clipping at 0.005 costs almost nothing on the right answers.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import h5py
import numpy as np

from stages import h5io
from stages.params import load_params


def clip_probs(p: np.ndarray, clip: float) -> np.ndarray:
    return np.clip(p, clip, 1.0 - clip)


def write_submission(path: str, ids: np.ndarray, probs: np.ndarray) -> None:
    """`id,label` rows, ids ascending (the resized order already is)."""
    if len(ids) != len(probs):
        raise ValueError(f"{len(ids)} ids but {len(probs)} predictions")
    order = np.argsort(ids, kind="stable")
    with h5io.atomic_path(path) as tmp, tmp.open("w") as f:
        f.write("id,label\n")
        f.writelines(f"{i},{p:.6f}\n" for i, p in zip(ids[order], probs[order], strict=True))


def summary(probs: np.ndarray) -> dict[str, Any]:
    return {"n_test": len(probs), "mean_prob_dog": float(np.mean(probs)),
            "share_dog": float(np.mean(probs > 0.5))}


def predict(model_path: str, features: str, clip: float, batch_size: int = 1024
            ) -> tuple[np.ndarray, np.ndarray]:
    import keras

    model = keras.models.load_model(model_path, compile=False, safe_mode=True)
    with h5py.File(features, "r") as f:
        ids = f["ids"][:]
        batches = h5io.iter_batches(f["test"], batch_size)
        probs = np.concatenate([model.predict_on_batch(b).reshape(-1) for b in batches])
    return ids, clip_probs(probs.astype(np.float64), clip)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="models/model_2.h5")
    ap.add_argument("--features", default="data/features/fused.h5")
    ap.add_argument("--out", default="pred.csv")
    ap.add_argument("--report", default="reports/predict.json")
    args = ap.parse_args(argv)

    params = load_params()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        h5io.require(args.features, ("test", "ids"), "Run `dvc repro concat` first.")
        if not os.path.isfile(args.model):
            raise FileNotFoundError(f"{args.model}: not found. Run `dvc repro train_head` first.")
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"predict: {e}")
    ids, probs = predict(args.model, args.features, params["clip"])
    write_submission(args.out, ids, probs)
    stats = summary(probs)
    h5io.write_json(args.report, stats)
    print(f"predict: {stats['n_test']} rows → {args.out} (mean p(dog) {stats['mean_prob_dog']:.3f},"
          f" {stats['share_dog']:.1%} above 0.5)")


if __name__ == "__main__":
    main()
