"""Extraction spread over two machines: each runs one network and pushes its outputs and
DVC's run-cache to the team's S3 remote (`s3remote`); a third computes neither. A module of its
own, so that pytest-xdist runs it beside the other remote tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import dvc, dvc_start, finish, make_project, ran_stages
from s3remote import BUCKET, S3Server, add_remote, lock_outs, machine, s3_server, with_remote

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    yield from s3_server()


@pytest.fixture(scope="module")
def origin(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project before any run, with the team's remote: where every machine starts."""
    return with_remote(make_project(tmp_path_factory.mktemp("remote") / "origin"), s3, "origin")



def test_extraction_spread_over_two_machines_via_run_cache(origin: Path, s3: S3Server) -> None:
    """A and B each extract one network's training split (a stage each: per network and per
    split) and push outputs and run-cache; C computes neither, and fuses them.

    No git traffic between the machines: all three start from the same commit, and the run-cache
    (keyed by each stage's command, deps and params) tells C that the two stages already ran.
    `dvc repro --pull` fetches the run-cache and the outputs of the stages it restores.
    """
    base = origin.parent
    url = f"s3://{BUCKET}/parallel"  # a remote of its own: only what A and B push is there
    a, b, c = (machine(origin, base / f"parallel-{n}") for n in "ABC")
    for m in (a, b, c):
        add_remote(m, "parallel", url, s3.url, local=True, default=True)

    work = {a: "extract_inception@train", b: "extract_xception@train"}
    jobs = {m: dvc_start(m, "repro", stage) for m, stage in work.items()}  # at the same time
    for m, stage in work.items():
        assert sorted(ran_stages(finish(jobs[m]))) == sorted(["pick_weights", "resize@train",
                                                             "int8_sample", stage])
        dvc(m, "push", "--run-cache")
    assert any(k.startswith("parallel/runs/") for k in s3.keys(BUCKET, "parallel/"))

    p = dvc(c, "repro", "--pull", "concat@train")  # (the head after it is another test's)
    ran = ran_stages(p)
    assert not set(work.values()) & set(ran), p.stdout
    # (int8_sample, seconds, writes its uncached file: no run-cache entry to pull)
    assert set(ran) - {"resize@train", "pick_weights", "int8_sample"} == {"concat@train"}, p.stdout
    for m, stage in work.items():
        assert f"Stage '{stage}' is cached - skipping run" in p.stdout
        assert lock_outs(c, stage) == lock_outs(m, stage)  # as A or B computed them
    assert ran_stages(dvc(c, "repro", "concat@train")) == []
