"""Stage `pick_weights`: the `weights` param split per network, one small file each
(`data/weights/<network>.json`: its entry and input scaling, a network left out: ImageNet's).

Each extractor depends on its own network's file, not on the param: DVC can make a stage depend
on a nested key (`weights.inception_v3`) only while that key exists, and it is absent when
`weights` is one value for all or a mapping that leaves the network out (`dvc repro` stops:
"Parameters 'weights.inception_v3' are missing"). Rewritten with the same bytes, a file reruns
nothing, so changing one network's entry reruns that network's extraction alone.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from stages import cli, h5io
from stages.params import NETWORKS, load_params, network_weights

PARAMS = ("weights",)  # what the stage reads of params.yaml


def pick(weights: str | Mapping[str, Any], out_dir: str) -> None:
    """Write every registry network's entry of `weights` to `out_dir/<network>.json`."""
    for name in NETWORKS:
        h5io.write_json(Path(out_dir) / f"{name}.json", asdict(network_weights(weights, name)))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args(argv)

    def work() -> None:
        pick(load_params(keys=PARAMS)["weights"], args.out_dir)

    cli.run("pick_weights", work)


if __name__ == "__main__":
    main()
