"""Stage `concat`, once per split: the `fuse` networks' features side by side → the fused
features the head trains on (4096-d for the card's InceptionV3 + Xception), with everything else
the head needs: the rows' names, labels, ids and classes, and a small JPEG preview of every
image (stages/previews.py).

Rows are copied in blocks, so memory stays bounded; the rows' info must agree between the files
(they come from the same resized tensors), otherwise the rows would not describe the same image.
"""

from __future__ import annotations

import argparse
from contextlib import ExitStack
from pathlib import Path

import h5py
import numpy as np

from stages import cli, h5io, previews
from stages.feature_files import FEATURE_CHUNK, MADE_WITH
from stages.params import load_params

ROWS = 4096  # rows per copy block: 4096 × 4096 float32 = 64 MB
EXTRACT_HINT = "Run `dvc repro` for the extractors."
DVC_YAML = "dvc.yaml"
PARAMS = ("fuse",)  # what the stage reads of params.yaml


def concat(inputs: list[str], out: str, resized: str) -> None:
    """Write `out` with `features` = the inputs' matrices side by side in their order, the
    rows' info, the `networks` (the inputs' backbones, in column order), their `weights`, the
    images' `width` and the previews of `resized`'s images."""
    for p in inputs:
        h5io.require(p, ("features", "names"), EXTRACT_HINT)
    h5io.require(resized, ("images",), "Run `dvc repro resize`.")
    with ExitStack() as stack:
        files = [stack.enter_context(h5py.File(p, "r")) for p in inputs]
        info, classes = h5io.read_row_info(files[0]), h5io.classes_if_any(files[0])
        for p, f in zip(inputs[1:], files[1:], strict=True):
            other = h5io.read_row_info(f)
            for key in sorted(set(info) | set(other)):
                if key not in info or key not in other or \
                        not np.array_equal(info[key], other[key]):
                    raise h5io.MissingInput(
                        f"{p}: '{key}' differ from {inputs[0]}; the feature files come from "
                        "different resized data. Rerun `dvc repro`.")
            if h5io.classes_if_any(f) != classes:
                raise h5io.MissingInput(f"{p}: classes differ from {inputs[0]}. Rerun "
                                        "`dvc repro`.")
        f_out = stack.enter_context(h5io.create_h5(out))
        n = files[0]["features"].shape[0]
        dim = sum(f["features"].shape[1] for f in files)
        rows = h5io.Appender(f_out, "features", (dim,), np.float32, FEATURE_CHUNK)
        for start in range(0, n, ROWS):
            rows.append(np.concatenate([f["features"][start:start + ROWS] for f in files],
                                       axis=1))
        h5io.write_row_info(f_out, info, classes)
        f_out.attrs["networks"] = [str(f.attrs.get("backbone", Path(p).stem))
                                   for p, f in zip(inputs, files, strict=True)]
        for key in MADE_WITH:
            f_out.attrs[key] = [str(f.attrs.get(key, "")) for f in files]
        with h5py.File(resized, "r") as src:
            if len(src["images"]) != n:
                raise h5io.MissingInput(
                    f"{resized}: {len(src['images'])} images, but the features have {n} rows. "
                    "Rerun `dvc repro`.")
            # The side the images were resized to: the model records it, so that the classify
            # tool resizes new images as the features were made (stages/classify.py).
            f_out.attrs["width"] = int(src["images"].shape[1])
            previews.write(f_out, src["images"])


def check_fuse(fuse: list[str], features_dir: str, dvc_yaml: str = DVC_YAML) -> None:
    """Every network in `fuse` needs an extraction stage whose features concat depends on:
    without the dependency DVC would not rerun concat when those features change."""
    deps = concat_deps(dvc_yaml)
    for name in fuse:
        path = Path(features_dir) / f"{name}.h5"
        listed = deps is None or f"data/features/${{item}}/{name}.h5" in deps
        if listed and path.is_file():
            continue
        raise cli.ParamsError(
            f"params.yaml: 'fuse' names {name!r}, but "
            + (f"{path} does not exist" if listed else
               f"dvc.yaml's concat does not list data/features/${{item}}/{name}.h5 in its deps")
            + f": add an `extract_{name}` group to dvc.yaml and list its features in concat's "
            f"deps (docs/networks.md), or remove {name!r} from fuse")


def concat_deps(dvc_yaml: str = DVC_YAML) -> list[str] | None:
    """concat's deps as dvc.yaml writes them (before DVC fills in `${item}`); None without a
    dvc.yaml (the stage's functions called outside a project)."""
    from ruamel.yaml import YAML

    if not Path(dvc_yaml).is_file():
        return None
    stage = (YAML(typ="safe").load(Path(dvc_yaml).read_text()) or {}).get("stages", {}) \
        .get("concat", {})
    return [str(d) for d in stage.get("do", stage).get("deps", [])]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--features-dir", required=True, help="a split's feature files")
    ap.add_argument("--images", required=True, help="the split's resized images, for previews")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    def work() -> None:
        fuse = load_params(keys=PARAMS)["fuse"]
        check_fuse(fuse, args.features_dir)
        concat([str(Path(args.features_dir) / f"{name}.h5") for name in fuse], args.out,
               args.images)
        print(f"concat: {' + '.join(fuse)} → {args.out}")

    cli.run("concat", work)


if __name__ == "__main__":
    main()
