"""Stage `pick_weights`: the `weights` param split per network, one small file each
(`data/weights/<network>.json`: its entry, its input scaling and the md5 of its weight file in
`keras_weights/`, if it has one; a network left out: ImageNet's).

Each extractor depends on its own network's file, not on the param: DVC can make a stage depend
on a nested key (`weights.inception_v3`) only while that key exists, and it is absent when
`weights` is one value for all or a mapping that leaves the network out (`dvc repro` stops:
"Parameters 'weights.inception_v3' are missing"). Rewritten with the same bytes, a file reruns
nothing, so changing one network's entry reruns that network's extraction alone. The stage, not
the extractors, depends on the `keras_weights/` folder: a file added or replaced there (a
RadImageNet file for InceptionV3) changes the md5 in its own network's file only, and reruns
that network's extraction, not every network's.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from stages import cli, h5io
from stages.backbones import BACKBONES, weight_path
from stages.params import NETWORKS, load_params, network_weights

PARAMS = ("weights",)  # what the stage reads of params.yaml


def pick(weights: str | Mapping[str, Any], out_dir: str) -> None:
    """Write every registry network's entry of `weights` to `out_dir/<network>.json`, with the
    md5 of its weight file (None for ImageNet's download, random weights, or a file that is
    missing, which its extractor names)."""
    for name in NETWORKS:
        entry = network_weights(weights, name)
        file = weight_path(BACKBONES[name], entry.weights)
        md5 = h5io.md5(file) if file and file.is_file() else None
        h5io.write_json(Path(out_dir) / f"{name}.json", {**asdict(entry), "md5": md5})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args(argv)

    def work() -> None:
        pick(load_params(keys=PARAMS)["weights"], args.out_dir)

    cli.run("pick_weights", work)


if __name__ == "__main__":
    main()
