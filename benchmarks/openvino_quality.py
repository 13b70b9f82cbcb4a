"""Quality of OpenVINO's features against TensorFlow float32's, on real images with real weights.

    python -m benchmarks.openvino_quality --photos DIR --xrays DIR --keras-weights DIR

For each engine × precision the stage can run here (TensorFlow float32; OpenVINO float32, int8,
and mixed_bfloat16 where OpenVINO lists BF16), the stage's own code (`stages.extract.extract`)
extracts Xception features of
- `--photos`: Kaggle-named cat and dog photos (`cat.N.jpg`, `dog.N.jpg`), the first
  `--train` of them (in name order, both classes) to train a logistic-regression head, the next
  `--test` to test it;
- `--xrays`: `NORMAL/` and `PNEUMONIA/` class folders with patient-named files, split by patient
  (a fixed seed: a quarter of the patients to test);
both resized to 299 px as `resize` does (OpenCV, INTER_AREA), with the genuine ImageNet Xception
weights of `--keras-weights` (a `keras_weights/` folder). int8 is quantized on the stage's own
sample of each set's training images (stages/int8_sample.py). It prints per row: the largest
difference to TensorFlow float32's features over their scale (max |f − f_TF| / max |f_TF|), the
lowest cosine similarity, the photos' held-out log loss and the X-rays' test AUC of a head
(scikit-learn's LogisticRegression, C=1, on standardised features) trained on that row's
features, and each one's difference to TensorFlow float32's.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from pathlib import Path

import cv2
import h5py
import numpy as np

WIDTH = 299
NET = "xception"
PATIENT = re.compile(r"^(person\d+|(?:NORMAL2-)?IM-\d+)")


def resized(paths: list[Path]) -> np.ndarray:
    out = []
    for p in paths:
        img = cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        out.append(cv2.resize(img, (WIDTH, WIDTH), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def write_split(path: Path, images: np.ndarray, names: list[str]) -> None:
    with h5py.File(path, "w") as f:
        f["images"] = images
        f["names"] = np.array(names, object)


def photos(folder: Path, n_train: int, n_test: int) -> tuple[list[Path], list[Path]]:
    def number(p: Path) -> int:
        return int(p.name.split(".")[1])

    cats = sorted(folder.glob("cat.*.jpg"), key=number)
    dogs = sorted(folder.glob("dog.*.jpg"), key=number)
    half_train, half_test = n_train // 2, n_test // 2
    return (cats[:half_train] + dogs[:half_train],
            cats[half_train:half_train + half_test] + dogs[half_train:half_train + half_test])


def xrays(folder: Path) -> tuple[list[Path], list[Path]]:
    files = sorted(folder.glob("*/*.jpeg"))
    patients = sorted({PATIENT.match(p.name).group(1) for p in files})  # type: ignore[union-attr]
    rng = np.random.default_rng(0)
    test = set(rng.choice(patients, len(patients) // 4, replace=False))
    return ([p for p in files if PATIENT.match(p.name).group(1) not in test],  # type: ignore[union-attr]
            [p for p in files if PATIENT.match(p.name).group(1) in test])  # type: ignore[union-attr]


def labels_of(paths: list[Path]) -> np.ndarray:
    return np.array([0 if p.name.startswith("cat") or p.parent.name == "NORMAL" else 1
                     for p in paths])


def rows() -> list[tuple[str, str]]:
    from stages import openvino_engine

    out = [("tensorflow", "float32"), ("openvino", "float32"), ("openvino", "int8")]
    if openvino_engine.bf16_supported():
        out.append(("openvino", "mixed_bfloat16"))
    return out


def features(work: Path, split: str, engine: str, precision: str) -> np.ndarray:
    from stages import extract
    from stages.backbones import BACKBONES

    out = work / f"{split}-{engine}-{precision}.h5"
    extract.extract(BACKBONES[NET], str(work / "data/resized" / f"{split}.h5"), str(out),
                    "keras_weights", precision, 32, 2017, engine)
    with h5py.File(out) as f:
        return f["features"][:]


def head(train: np.ndarray, y_train: np.ndarray, test: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    return model.fit(train, y_train).predict_proba(test)[:, 1]


def evaluate(name: str, train: list[Path], test: list[Path], weights: Path) -> list[dict]:
    from sklearn.metrics import log_loss, roc_auc_score

    from stages import h5io, int8_sample

    work = Path(tempfile.mkdtemp(prefix=f"ovq-{name}-"))
    os.chdir(work)
    (work / "keras_weights").symlink_to(weights)
    (work / "data/resized").mkdir(parents=True)
    (work / "data/int8").mkdir()
    write_split(work / "data/resized/train.h5", resized(train), [p.name for p in train])
    write_split(work / "data/resized/test.h5", resized(test), [p.name for p in test])
    h5io.write_json("data/int8/sample.json", int8_sample.record("int8", "data/resized/train.h5"))
    y_train, y_test = labels_of(train), labels_of(test)
    results = []
    for engine, precision in rows():
        f_train = features(work, "train", engine, precision)
        f_test = features(work, "test", engine, precision)
        p = head(f_train, y_train, f_test)
        results.append({"set": name, "row": f"{engine} {precision}", "train": f_train,
                        "test": f_test, "log_loss": log_loss(y_test, np.clip(p, 1e-7, 1 - 1e-7)),
                        "auc": roc_auc_score(y_test, p)})
    return results


def table(results: list[dict]) -> str:
    lines = ["| set | engine, precision | max diff / scale | lowest cosine | held-out log loss "
             "(Δ) | test AUC (Δ) |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for name in dict.fromkeys(r["set"] for r in results):
        mine = [r for r in results if r["set"] == name]
        ref = mine[0]
        for r in mine:
            a = np.concatenate([r["train"], r["test"]])
            b = np.concatenate([ref["train"], ref["test"]])
            diff = np.abs(a - b).max() / np.abs(b).max()
            cos = ((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min()
            lines.append(f"| {name} | {r['row']} | {diff:.1e} | {cos:.4f} | {r['log_loss']:.4f} "
                         f"({r['log_loss'] - ref['log_loss']:+.4f}) | {r['auc']:.4f} "
                         f"({r['auc'] - ref['auc']:+.4f}) |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path)
    ap.add_argument("--xrays", type=Path)
    ap.add_argument("--keras-weights", type=Path, required=True)
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--test", type=int, default=200)
    args = ap.parse_args()
    weights = args.keras_weights.resolve()
    results = []
    if args.photos:
        results += evaluate("photos", *photos(args.photos.resolve(), args.train, args.test),
                            weights)
    if args.xrays:
        results += evaluate("X-rays", *xrays(args.xrays.resolve()), weights)
    print(table(results))


if __name__ == "__main__":
    main()
