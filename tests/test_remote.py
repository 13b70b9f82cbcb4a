"""Sharing through a DVC remote: a real S3-compatible server (moto) on loopback, as `endpointurl`
(`s3remote`). The raw images and the local weights are DVC-tracked
inputs (README, "Data"): a machine gets them with `dvc pull`, or, before anything was pushed, as a
teammate with the Kaggle download has them (a copy). Machine A, which pushes, is a copy of the
session's pipeline run on local weights; the other machines clone it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import copy_project, dvc, md5, ran_stages, run
from s3remote import (
    S3Server,
    add_remote,
    machine,
    outputs,
    s3_server,
    snapshot,
    with_remote,
)

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    yield from s3_server()


@pytest.fixture(scope="module")
def pushed(baseline: Path, s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Machine A: the full pipeline run on local weight files, the raw images and the weights
    DVC-tracked as the README's data step leaves them, dvc.lock committed, everything pushed."""
    a = with_remote(copy_project(baseline, tmp_path_factory.mktemp("remote") / "A"), s3,
                    "shared")
    dvc(a, "push")
    return a


def test_clone_pulls_everything_and_reproduces_nothing(pushed: Path) -> None:
    b = machine(pushed, pushed.parent / "B", raw=False)  # the images come with `dvc pull`
    assert not (b / "pred.csv").exists() and not (b / "data/raw/train").exists()
    dvc(b, "pull")
    p = dvc(b, "repro")
    assert ran_stages(p) == [], p.stdout
    assert "up to date" in p.stdout
    assert (b / "pred.csv").read_bytes() == (pushed / "pred.csv").read_bytes()
    for h5 in outputs(pushed):
        assert md5(b / h5) == md5(pushed / h5), h5
    for tracked in ("data/raw/train", "data/raw/test", "keras_weights"):  # the inputs too
        assert snapshot(b / tracked) == snapshot(pushed / tracked), tracked


FUSED = ["data/features/test/fused.h5", "data/features/train/fused.h5"]


def test_teammate_pulls_only_the_fused_features_and_trains(pushed: Path) -> None:
    """With `weights: keras_weights`: the weights, like the images, are DVC-tracked and not
    pulled, so DVC sees them as missing (not modified), and `--allow-missing` skips their
    stages."""
    b = machine(pushed, pushed.parent / "B2", raw=False)
    assert yaml.safe_load((b / "params.yaml").read_text())["weights"] == "keras_weights"
    dvc(b, "pull", *FUSED)
    assert sorted(str(p.relative_to(b)) for p in b.rglob("*.h5")) == FUSED
    # Two objects in this machine's cache: none of the resized images or per-network features.
    objects = [p for p in (b / ".dvc/cache/files").rglob("*") if p.is_file()]
    assert sorted(md5(o) for o in objects) == sorted(md5(b / f) for f in FUSED)

    # `predict`: the report needs files this clone has not pulled (docs/sharing.md)
    p = dvc(b, "exp", "run", "--allow-missing", "-S", "dropout=0.3", "predict")
    assert ran_stages(p) == ["train_head", "predict"], p.stdout + p.stderr
    assert (b / "pred.csv").is_file()
    assert yaml.safe_load((b / "params.yaml").read_text())["dropout"] == 0.3


def test_local_folder_remote_quickstart(pushed: Path) -> None:
    """README's one-machine quickstart: a folder outside the repo, no extra package needed."""
    store = pushed.parent / "dvc-store"
    dvc(pushed, "remote", "add", "--local", "folder", str(store))
    dvc(pushed, "push", "-r", "folder")
    for out in outputs(pushed):
        h = md5(pushed / out)
        assert (store / "files/md5" / h[:2] / h[2:]).is_file(), out
    assert "in sync" in dvc(pushed, "status", "--cloud", "-r", "folder").stdout


def test_push_to_an_unreachable_remote_fails_cleanly_and_retry_succeeds(pushed: Path) -> None:
    server = S3Server()  # its own server, so stopping it leaves the module's one alone
    server.start()
    try:
        server.client().create_bucket(Bucket="dvc-flaky")
        add_remote(pushed, "flaky", "s3://dvc-flaky/store", server.url, local=True)
        server.stop()

        before = snapshot(pushed)
        p = dvc(pushed, "push", "-r", "flaky", check=False)
        assert p.returncode != 0
        assert "ERROR" in p.stderr and "Could not connect to the endpoint URL" in p.stderr
        assert "Traceback" not in p.stdout + p.stderr  # DVC's own message, not a crash
        assert snapshot(pushed) == before

        server.start()  # same port, same stored bucket: the server is back
        dvc(pushed, "push", "-r", "flaky")
        keys = server.keys("dvc-flaky", "store/files/md5/")
        for out in outputs(pushed):
            h = md5(pushed / out)
            assert f"store/files/md5/{h[:2]}/{h[2:]}" in keys, out
        assert snapshot(pushed) == before
    finally:
        if server._moto is not None:
            server.stop()


def test_teammate_with_the_trained_model_scores_new_images(pushed: Path) -> None:
    """README, "Score new images": a clone that pulled only the model (and the local weights
    the extractors need) scores another folder, `-S test_data=…`, of photos named as a camera
    names them: nothing of the training side runs or is fetched, and each row of pred.csv
    names its file."""
    import imagegen
    import numpy as np

    b = machine(pushed, pushed.parent / "B3", raw=False)
    dvc(b, "pull", "models/model_2.h5", "keras_weights")
    rng = np.random.default_rng(5)
    names = ["IMG_0001.jpg", "IMG_0002.JPG", "scan 3.png"]
    for name in names:
        imagegen.write(b / "data/raw/new" / name, imagegen.image(rng, 0))
    p = dvc(b, "exp", "run", "--allow-missing", "-S", "test_data=data/raw/new", "predict")
    test_side = [f"{g}@test" for g in ("resize", "extract_inception", "extract_xception",
                                      "concat")]
    assert sorted(ran_stages(p)) == sorted([*test_side, "predict"]), p.stdout + p.stderr
    rows = [r.split(",") for r in (b / "pred.csv").read_text().splitlines()]
    assert rows[0] == ["id", "label", "predicted_class"] and [r[0] for r in rows[1:]] == names
    assert [r[2] for r in rows[1:]] == ["dog" if float(r[1]) >= 0.5 else "cat" for r in rows[1:]]
    assert all(0.005 <= float(r[1]) <= 0.995 for r in rows[1:])
    assert "predict: 3 rows (named by file)" in p.stdout
    assert not (b / "data/resized/train.h5").exists()


def test_a_colleague_gets_the_model_as_a_registered_artifact(pushed: Path) -> None:
    """README, "Classify images": dvc.yaml's `artifacts:` names the model; a version tagged in
    GTO's form is what `dvc artifacts get` fetches, from the team's remote, into any folder."""
    from s3remote import KEY

    from stages import model_record

    run(pushed, "git", "tag", "-a", "classifier@v1.0.0", "-m", "the first model")
    b = machine(pushed, pushed.parent / "B4", raw=False)  # a clone without the DVC cache
    elsewhere = pushed.parent / "colleague"
    elsewhere.mkdir()
    p = dvc(elsewhere, "artifacts", "get", str(b), "classifier", "--rev", "v1.0.0",
            "--remote-config", f"access_key_id={KEY}", f"secret_access_key={KEY}")
    assert md5(elsewhere / "model_2.h5") == md5(pushed / "models/model_2.h5"), p.stdout
    assert model_record.read(elsewhere / "model_2.h5").classes == ["cat", "dog"]
