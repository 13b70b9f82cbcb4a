"""The classify tool: the trained classifier outside the pipeline (stages/classify.py), its class
activation maps (stages/cam.py) and its SavedModel export.

Unit tests build small models by hand (random-init networks, a head whose weights the test
chooses); the end-to-end checks ride on the session's pipeline run (`baseline`), reading it and
writing elsewhere, and on the classes project (tests/test_classes.py)."""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import h5py
import imagegen
import numpy as np
import pytest
from conftest import REPO

from stages import cam, inputs, resize
from stages.classifier import Classifier, ModelError
from stages.images import DataError, Source, list_test
from stages.model_record import ModelRecord


def write_model(path: Path, networks: list[str], width: int, kernel: np.ndarray,
                bias: np.ndarray, classes: list[str], weights: str = "none, seed 3",
                threshold: float = 0.5) -> Path:
    """A head file as train_head writes it, with the Dense weights given and the record."""
    from stages.train_head import build_head

    head = build_head(kernel.shape[0], 0.5, 1e-3, len(classes))
    head.get_layer("dense").set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    head.save(path)
    with h5py.File(path, "a") as f:
        f.attrs.update({"classes": classes, "networks": networks,
                        "weights": [weights] * len(networks), "width": width,
                        "threshold": threshold, "temperature": 1.0})
    return path


def smooth_images(n: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 4, 4, 3)).astype(np.float32)
    return np.stack([np.clip(cv2.resize(s, (width, width), interpolation=cv2.INTER_CUBIC)
                             + rng.normal(0, 20, (width, width, 3)), 0, 255).astype(np.uint8)
                     for s in small])


# --- the CAM identity ---------------------------------------------------------------------------

THREE = ["inception_v3", "xception", "resnet50"]  # the card's two, and one more of the registry
CAM_WIDTH = 139  # grids 3×3 (InceptionV3), 5×5 (Xception, ResNet50): more than one cell each


def test_each_networks_map_averages_to_its_share_of_the_logit(tmp_path: Path) -> None:
    """Per network, the map (its last convolutional maps times its Dense columns) averaged over
    its grid; summed over the networks, plus the bias: the head's logit of the predicted
    class, for class 1 and for class 0 (whose logit is −z)."""
    rng = np.random.default_rng(0)
    kernel = rng.normal(0, 1, (3 * 2048, 1))
    model = write_model(tmp_path / "m.h5", THREE, CAM_WIDTH, kernel, np.array([0.3]),
                        ["cat", "dog"])
    clf = Classifier.load(str(model))
    pixels = smooth_images(6, CAM_WIDTH)
    first = clf.explain(pixels)
    z = first.logits * np.where(first.predicted == 1, 1, -1) - 0.3  # the kernel's part
    # Random networks give alike features: scale and centre the logits to a few units, so that
    # p is no saturated 0 or 1 and both classes are decided.
    scale = 2.0 / np.std(z)
    bias = np.array([-scale * np.mean(z)])
    model = write_model(tmp_path / "m.h5", THREE, CAM_WIDTH, kernel * scale, bias,
                        ["cat", "dog"])
    clf = Classifier.load(str(model))
    clf.threshold = float(np.median(clf.predict(pixels)[:, 1]))
    e = clf.explain(pixels)
    assert set(e.predicted) == {0, 1}
    assert [g.shape[1:] for g in e.grids] == [(3, 3), (5, 5), (5, 5)]
    shares = np.sum([g.mean(axis=(1, 2), dtype=np.float64) for g in e.grids], axis=0)
    np.testing.assert_allclose(shares + e.bias, e.logits, atol=1e-4)
    # ... and those logits are the head's (Keras' Dense and sigmoid on the pooled features).
    p1 = e.probs[:, 1].astype(np.float64)
    head = np.log(p1 / (1 - p1)) * np.where(e.predicted == 1, 1, -1)
    np.testing.assert_allclose(e.logits, head, atol=1e-4)
    # The maps at the image's width: each network's grid upsampled bilinearly, then summed.
    # Upsampling is linear, so a map's mean is a^T G a, a[i] being cell i's weight averaged over
    # the image's pixels (bilinear_weights, from the formula, not OpenCV): checked to 1e-5
    # (measured: 1.4e-7 on means of ±40, float32 rounding). Their products a_i a_j lie within
    # 4e-4 of 1/h² (relative) at 139 px (the edges' clamping shifts them), so the map's mean
    # lies within that fraction of the grid's mean |value| of the share: the bound below
    # (0.017 here, the difference measured 8e-4; the old rtol 0.2 let 8 logit units pass).
    probs, maps = clf.cam(pixels)
    assert maps.shape == (6, CAM_WIDTH, CAM_WIDTH) and maps.dtype == np.float32
    np.testing.assert_allclose(probs, e.probs, atol=1e-6)
    mean = maps.mean(axis=(1, 2), dtype=np.float64)
    weights = [bilinear_weights(g.shape[1], CAM_WIDTH) for g in e.grids]
    upsampled = np.sum([np.einsum("i,nij,j->n", a, g.astype(np.float64), a)
                        for a, g in zip(weights, e.grids, strict=True)], axis=0)
    np.testing.assert_allclose(mean, upsampled, rtol=0, atol=1e-5)
    bound = np.sum([np.abs(np.outer(a, a) * a.size ** 2 - 1).max()
                    * np.abs(g).mean(axis=(1, 2), dtype=np.float64)
                    for a, g in zip(weights, e.grids, strict=True)], axis=0)
    assert (np.abs(mean - shares) <= bound + 1e-6).all(), (mean - shares, bound)
    assert bound.max() < 1e-3 * np.abs(shares).max(), bound  # tight: it can fail


def bilinear_weights(h: int, width: int) -> np.ndarray:
    """Each of `h` cells' weight in a bilinear upsampling to `width` (OpenCV's INTER_LINEAR:
    pixel centres aligned, clamped at the edges), averaged over the output pixels."""
    a = np.zeros(h)
    for x in range(width):
        f = (x + 0.5) * h / width - 0.5
        i, t = math.floor(f), f - math.floor(f)
        if i < 0 or i >= h - 1:
            a[min(max(i, 0), h - 1)] += 1
        else:
            a[i] += 1 - t
            a[i + 1] += t
    return a / width


# --- orientation and export: one network, a head that sees one corner's object ---------------

ONE, WIDTH = ["xception"], 139


def corner_images(width: int) -> tuple[np.ndarray, np.ndarray]:
    """(a plain background, the same with a textured object in the top right corner)."""
    rng = np.random.default_rng(1)
    bg = np.clip(128 + rng.normal(0, 6, (width, width, 3)), 0, 255).astype(np.uint8)
    obj = bg.copy()
    side = width // 4
    patch = rng.integers(0, 256, (side // 4, side // 4, 3)).astype(np.uint8)
    obj[4:4 + side, width - 4 - side:width - 4] = cv2.resize(patch, (side, side),
                                                             interpolation=cv2.INTER_NEAREST)
    return bg, obj


@pytest.fixture(scope="module")
def corner(tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    """A classifier whose head weighs only what the object adds to the pooled features."""
    folder = tmp_path_factory.mktemp("corner")
    zero = np.zeros((2048, 1))
    clf = Classifier.load(str(write_model(folder / "m.h5", ONE, WIDTH, zero, np.zeros(1),
                                          ["plain", "object"])))
    bg, obj = corner_images(WIDTH)
    f = clf.explain(np.stack([bg, obj])).features.astype(np.float64)
    w = (f[1] - f[0])[:, None]
    w *= 3.0 / float((f[1] - f[0]) @ w[:, 0])  # the object's logit 3 above the background's
    return Classifier.load(str(write_model(folder / "m.h5", ONE, WIDTH, w, np.zeros(1),
                                           ["plain", "object"])))


def test_the_map_is_where_the_object_is_not_transposed_or_flipped(corner: Classifier) -> None:
    _, obj = corner_images(WIDTH)
    probs, maps = corner.cam(obj[None])
    assert corner.classes[int(np.argmax(probs[0]))] == "object"
    row, col = np.unravel_index(np.argmax(maps[0]), maps[0].shape)
    assert row < WIDTH / 2 and col > WIDTH / 2, (row, col)  # top right, as the object
    grid = corner.explain(obj[None]).grids[0][0]
    r, c = np.unravel_index(np.argmax(grid), grid.shape)
    h, w = grid.shape
    assert r < h / 2 and c > w / 2, grid
    assert grid[:h // 2, -(w // 2):].min() > grid[-(h // 2):, :w // 2].max(), grid


def test_the_savedmodel_decides_as_the_classifier_at_its_threshold(
        corner: Classifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exported, reloaded by TensorFlow alone (no Keras, no stages), fed uint8 RGB: its
    serving_default signature gives the Classifier's probabilities, and the class it decides at
    the model's threshold (not 0.5: some images are decided otherwise at 0.5) with its name;
    the export keeps the classes, threshold and width in assets/classifier.json."""
    import tensorflow as tf

    from stages import decision, destinations

    pixels = np.concatenate([np.stack(corner_images(WIDTH)), smooth_images(5, WIDTH)])
    probs = corner.predict(pixels)
    p1 = np.sort(probs[:, 1])
    clf = copy.copy(corner)  # the fixture's threshold stays 0.5
    clf.threshold = next(float(t) for t in (p1[:-1] + p1[1:]) / 2 if abs(t - 0.5) > 1e-3
                         and ((probs[:, 1] >= t) != (probs[:, 1] >= 0.5)).any())
    want = decision.predicted(probs, clf.threshold)
    assert (want != decision.predicted(probs, 0.5)).any()

    folder = tmp_path / "exported/classifier"
    clf.export(folder)
    loaded = tf.saved_model.load(str(folder))  # kept: it owns the variables
    served = loaded.signatures["serving_default"](images=tf.constant(pixels))
    assert sorted(served) == ["predicted", "predicted_class", "probabilities"]
    np.testing.assert_allclose(served["probabilities"].numpy(), probs, atol=1e-5)
    np.testing.assert_array_equal(served["predicted"].numpy(), want)
    assert [c.decode() for c in served["predicted_class"].numpy()] == \
        [clf.classes[c] for c in want]
    by_method = loaded.serve(tf.constant(pixels))
    np.testing.assert_array_equal(by_method["predicted"].numpy(), want)
    kept = json.loads((folder / "assets/classifier.json").read_text())
    assert (kept["classes"], kept["threshold"], kept["width"]) == (
        ["plain", "object"], clf.threshold, WIDTH)
    assert kept["input"]["shape"] == [None, WIDTH, WIDTH, 3] and "INTER_AREA" in \
        kept["input"]["pixels"]
    assert Path(loaded.metadata.asset_path.numpy().decode()).read_text() == \
        (folder / "assets/classifier.json").read_text()
    # Each weight once (Keras' own export writes each twice: keras-team/keras#23553).
    stored = tf.train.load_checkpoint(str(folder / "variables/variables"))
    sizes = [int(np.prod(s)) for k, s in stored.get_variable_to_shape_map().items()
             if k != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    assert sum(sizes) == corner.probs_model.count_params()
    # docs/stages.md's lines, on a JPEG: TensorFlow's accurate decoding, OpenCV's resizing.
    photo = smooth_images(1, 200, seed=6)[0]
    cv2.imwrite(str(tmp_path / "a.jpg"), photo[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    text = (REPO / "docs/stages.md").read_text().split("## The exported SavedModel", 1)[1]
    code = re.search(r"```python\n(.*?)```", text, re.S)
    assert code, "docs/stages.md's Python lines"
    scope: dict[str, Any] = {}
    with monkeypatch.context() as m:
        m.chdir(tmp_path)
        exec(code.group(1), scope)
    np.testing.assert_allclose(scope["out"]["probabilities"].numpy(),
                               clf.predict([tmp_path / "a.jpg"]), atol=1e-5)

    corner.export(folder)  # an earlier export is replaced
    assert sorted(p.name for p in folder.parent.iterdir()) == ["classifier"]
    assert json.loads((folder / "assets/classifier.json").read_text())["threshold"] == 0.5
    # A swap that fails puts the earlier export back, under its own name.
    failing_swap(monkeypatch)
    with pytest.raises(OSError, match="no room"):
        clf.export(folder)
    monkeypatch.undo()
    assert sorted(p.name for p in folder.parent.iterdir()) == ["classifier"]
    assert json.loads((folder / "assets/classifier.json").read_text())["threshold"] == 0.5
    (tmp_path / "notes").mkdir()  # ... never a folder of something else
    (tmp_path / "notes/keep.txt").write_text("mine")
    with pytest.raises(destinations.OutputError, match="exists and is no SavedModel"):
        corner.export(tmp_path / "notes")
    assert (tmp_path / "notes/keep.txt").read_text() == "mine"


def failing_swap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Renaming the new folder (`.NAME.tmpPID`) into place fails, as on a full or read-only
    disk; the other renames of the swap happen."""
    rename = Path.rename

    def fail_new(src: Path, dst: Path) -> Path:
        if ".tmp" in src.name:
            raise OSError("no room")
        return rename(src, dst)

    monkeypatch.setattr(Path, "rename", fail_new)


def test_tensorflows_accurate_jpeg_decoding_gives_the_pixels_the_export_takes(
        tmp_path: Path) -> None:
    """docs/cam.md, "The exported SavedModel": `tf.io.decode_jpeg(dct_method=
    "INTEGER_ACCURATE")` then OpenCV's INTER_AREA gives resize's pixels exactly; TensorFlow's
    default (fast) DCT does not."""
    import tensorflow as tf

    rng = np.random.default_rng(5)
    small = rng.integers(0, 256, (12, 16, 3)).astype(np.float32)
    photo = np.clip(cv2.resize(small, (320, 240), interpolation=cv2.INTER_CUBIC)
                    + rng.normal(0, 10, (240, 320, 3)), 0, 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a.jpg"), photo, [cv2.IMWRITE_JPEG_QUALITY, 90])
    data = (tmp_path / "a.jpg").read_bytes()
    want = inputs.load_all([tmp_path / "a.jpg"], 75)[0]
    for method, same in (("INTEGER_ACCURATE", True), ("", False)):
        decoded = tf.io.decode_jpeg(data, channels=3, dct_method=method).numpy()
        got = cv2.resize(decoded, (75, 75), interpolation=cv2.INTER_AREA)
        assert np.array_equal(got, want) == same, method


def test_an_array_of_another_width_stops_in_one_line(corner: Classifier) -> None:
    with pytest.raises(ModelError, match=f"trained at width {WIDTH}"):
        corner.predict(np.zeros((1, 75, 75, 3), np.uint8))


def test_paths_are_decoded_and_predicted_as_the_array(corner: Classifier, tmp_path: Path
                                                      ) -> None:
    """Paths go through resize's decoding at the model's width: a PNG of the pixels themselves
    (lossless) gives the probabilities of the array."""
    _, obj = corner_images(WIDTH)
    cv2.imwrite(str(tmp_path / "obj.png"), obj[..., ::-1])
    np.testing.assert_allclose(corner.predict([tmp_path / "obj.png"]), corner.predict(obj[None]),
                               atol=1e-6)


# --- the model's record, and what stops ----------------------------------------------------------

def test_a_model_without_its_width_or_weights_stops_in_one_line(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.h5", ONE, WIDTH, np.zeros((2048, 1)), np.zeros(1),
                       ["a", "b"])
    with h5py.File(path, "a") as f:
        del f.attrs["width"]
    with pytest.raises(ModelError, match=r"does not record the width.*dvc repro train_head"):
        Classifier.load(str(path))


def test_weights_missing_for_a_network_stop_in_one_line(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_model(tmp_path / "m.h5", ONE, WIDTH, np.zeros((2048, 1)), np.zeros(1),
                       ["a", "b"], weights="keras_weights")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keras_weights").mkdir()
    with pytest.raises(ModelError, match="its xception features were made with weights "
                                         r"'keras_weights'; keras_weights/xception_weights_tf_dim_"
                                         r"ordering_tf_kernels_notop\.h5: missing\. .*dvc pull"):
        Classifier.load(str(path))


def test_a_missing_model_or_path_stops_before_tensorflow(tmp_path: Path) -> None:
    for args, said in ((["x.jpg", "--model", "none.h5"], "none.h5: not found"),
                       (["--model", "none.h5", "--export", "e"], "none.h5: not found")):
        p = subprocess.run([sys.executable, "-m", "stages.classify", *args], cwd=REPO,
                           capture_output=True, text=True, env={"PYTHONPATH": str(REPO)})
        assert p.returncode == 1 and said in p.stderr, p.stderr
        assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    with pytest.raises(DataError, match=r"nowhere\.png: does not exist"):
        inputs.entries([tmp_path / "nowhere.png"])


def test_files_that_all_fail_write_nothing_and_say_so(corner: Classifier, tmp_path: Path
                                                      ) -> None:
    from stages.classify import classify

    (tmp_path / "a.jpg").write_bytes(b"not an image")
    found, _ = inputs.entries([tmp_path / "a.jpg"])
    with pytest.raises(DataError, match="none of the 1 images could be decoded"):
        classify(corner, found, tmp_path / "cam")
    assert not (tmp_path / "cam/cam.h5").exists()


def test_cam_replaces_an_earlier_output_and_refuses_other_folders(
        corner: Classifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second --cam into the same folder leaves its own pictures only (the first run's were
    left beside the new cam.h5); a folder of anything else is refused, untouched; a swap that
    fails puts the earlier output back."""
    from stages import destinations
    from stages.classify import classify

    bg, obj = corner_images(WIDTH)
    for name, img in (("bg.png", bg), ("obj.png", obj)):
        cv2.imwrite(str(tmp_path / name), img[..., ::-1])
    both, _ = inputs.entries([tmp_path / "bg.png", tmp_path / "obj.png"])
    one, _ = inputs.entries([tmp_path / "obj.png"])
    classify(corner, both, tmp_path / "cam")
    assert len(list((tmp_path / "cam").glob("*.png"))) == 2
    classify(corner, one, tmp_path / "cam")
    assert sorted(p.name for p in (tmp_path / "cam").iterdir()) == ["0_obj.png.png", "cam.h5"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    failing_swap(monkeypatch)
    with pytest.raises(OSError, match="no room"):
        classify(corner, both, tmp_path / "cam")
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "cam").iterdir()) == ["0_obj.png.png", "cam.h5"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/notes.txt").write_text("keep")
    with pytest.raises(destinations.OutputError, match=r"--cam .*mine: holds notes\.txt, not only "
                                                  r"an earlier --cam output"):
        classify(corner, one, tmp_path / "mine")
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


def test_a_swap_that_fails_puts_the_old_folder_back(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """stages/outputs.py: the old folder left under a hidden `.NAME.oldPID` name was --export's
    way of failing."""
    from stages import outputs

    (tmp_path / "out").mkdir()
    (tmp_path / "out/old.txt").write_text("old")
    failing_swap(monkeypatch)
    with pytest.raises(OSError, match="no room"), outputs.atomic_dir(tmp_path / "out") as tmp:
        (tmp / "new.txt").write_text("new")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["old.txt"]
    with outputs.atomic_dir(tmp_path / "out") as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["new.txt"]


@pytest.mark.parametrize(("args", "said"), [
    (["a.jpg", "--out", "{tmp}"], "--out {tmp}: is a folder"),
    (["a.jpg", "--cam", "{tmp}/file.txt"], "--cam {tmp}/file.txt: is a file"),
    (["a.jpg", "--cam", "{tmp}"], "--cam {tmp}: holds file.txt, not only an earlier --cam"),
    (["--export", "{tmp}"], "--export {tmp}: exists and is no SavedModel"),
    (["--mistakes", "2", "--mistakes-out", "{tmp}"], "--mistakes-out {tmp}: is a folder"),
    (["d", "--metrics", "{tmp}"], "--metrics {tmp}: is a folder"),
], ids=["out-folder", "cam-file", "cam-other-folder", "export-other-folder", "mistakes-out",
        "metrics-folder"])
def test_an_output_that_cannot_be_written_stops_before_tensorflow(
        args: list[str], said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One line, before the model is read or anything scored (they crashed once every image was
    scored: IsADirectoryError, FileExistsError)."""
    from stages import classify, model_record

    (tmp_path / "file.txt").write_text("mine")
    monkeypatch.setattr(model_record, "read", lambda *a: pytest.fail("the model was read"))
    with pytest.raises(SystemExit) as stop:
        classify.main([a.format(tmp=tmp_path) for a in args])
    message = str(stop.value.code)
    assert message.startswith(f"classify: {said.format(tmp=tmp_path)}"), message
    assert "\n" not in message


def test_mistakes_0_is_refused_as_such(capsys: pytest.CaptureFixture[str]) -> None:
    """0 is falsy: it got the "give images" error."""
    from stages import classify

    with pytest.raises(SystemExit) as stop:
        classify.main(["--mistakes", "0"])
    assert stop.value.code == 2
    assert "--mistakes must be at least 1, got 0" in capsys.readouterr().err


def test_the_tools_outputs_where_the_readme_puts_them_are_ignored_by_git(tmp_path: Path) -> None:
    """README, "Classify images": `--export exported/classifier` (170 MB) and `--cam
    reports/cam`, --mistakes' picture and `--metrics reports/outside.json`, written in a
    repository holding the project's .gitignore files: `git status` shows none of them (`git
    add -A` committed them)."""
    import shutil

    from stages import classify

    section = (REPO / "README.md").read_text().split("## Classify images", 1)[1].split("\n## ")[0]
    folders = re.findall(r"--(?:export|cam) (\S+)", section)
    assert {"exported/classifier", "reports/cam"} <= set(folders), folders
    files = re.findall(r"--metrics ([\w./-]+\.json)", section)
    assert "reports/outside.json" in files, files
    mistakes = classify.MISTAKES_OUT  # the default of --mistakes-out
    try:
        listed = subprocess.run(["git", "ls-files", "--", "*.gitignore"], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (a source archive): no .gitignore files to check")
    assert ".gitignore" in listed and "reports/.gitignore" in listed, listed
    repo = tmp_path / "repo"
    for name in listed:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, repo / name)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    for folder in folders:
        for name in ("saved_model.pb", "assets/classifier.json", "0_a.jpg.png", "cam.h5"):
            (repo / folder / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / folder / name).write_bytes(b"x")
    (repo / mistakes).write_bytes(b"x")
    for name in files:
        (repo / name).write_bytes(b"x")
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                            cwd=repo, capture_output=True, text=True, check=True).stdout
    shown = {line[3:] for line in status.splitlines()}
    assert shown == set(listed), status  # the .gitignore files themselves, nothing else


def test_the_readmes_release_lines_push_the_tag_dvc_reads_to_the_remote_named(
        tmp_path: Path) -> None:
    """README, "Classify images": its `REMOTE=` and `git tag … && git push "$REMOTE" …` lines,
    run by bash as written, put an annotated `classifier@v1.0.0` on that remote (DVC's
    `--rev v1.0.0`: GTO's tag form, which tests/test_remote.py fetches with `dvc artifacts
    get`); they pushed to `origin` whatever the team's remote was."""
    section = (REPO / "README.md").read_text().split("## Classify images", 1)[1].split("\n## ")[0]
    lines = [ln for ln in section.splitlines() if ln.startswith(("REMOTE=", "git tag"))]
    assert len(lines) == 2 and '"$REMOTE"' in lines[1], lines
    git = ["git", "-c", "user.name=dev", "-c", "user.email=dev@example.com"]
    subprocess.run(["git", "init", "-q", "--bare", str(tmp_path / "team.git")], check=True)
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "model"], cwd=repo, check=True)
    subprocess.run(["git", "remote", "add", "origin", str(tmp_path / "team.git")], cwd=repo,
                   check=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GIT_AUTHOR_NAME": "dev",
           "GIT_AUTHOR_EMAIL": "dev@example.com", "GIT_COMMITTER_NAME": "dev",
           "GIT_COMMITTER_EMAIL": "dev@example.com"}
    subprocess.run(["bash", "-ec", "\n".join(lines)], cwd=repo, env=env, check=True,
                   capture_output=True)
    kind = subprocess.run(["git", "cat-file", "-t", "refs/tags/classifier@v1.0.0"],
                          cwd=tmp_path / "team.git", capture_output=True, text=True, check=True)
    assert kind.stdout.strip() == "tag"  # annotated: GTO reads no lightweight tag


def test_a_file_name_that_is_not_utf8_stops_before_decoding(tmp_path: Path) -> None:
    """Named on its own as in a folder (images.py): the table, CSV and cam.h5 hold UTF-8."""
    import os

    name = os.fsdecode(b"caf\xe9.png")
    (tmp_path / name).write_bytes(b"")  # never read: the name stops it
    with pytest.raises(DataError, match=r"not UTF-8: \$'.*caf\\xe9\.png'"):
        inputs.entries([tmp_path / name])


def test_a_file_that_is_no_model_or_an_empty_validation_split_stop_in_one_line(
        tmp_path: Path) -> None:
    from stages import cli, model_record, val_predictions

    (tmp_path / "model.h5").write_text("not HDF5")
    with pytest.raises(cli.MissingInput, match=r"model\.h5: not a model file train_head writes"):
        model_record.read(tmp_path / "model.h5")
    (tmp_path / "predictions.csv").write_text("id,label,true_class\n")
    with pytest.raises(cli.MissingInput, match="holds no validation rows"):
        val_predictions.read(tmp_path / "predictions.csv", ["cat", "dog"])


def test_validation_predictions_are_read_with_6_decimals_or_9_significant_digits(
        tmp_path: Path) -> None:
    """train_head wrote 6 decimals; with float32's repr (9 significant digits) a probability
    may read 0.999999881 or 1.2e-07."""
    from stages import val_predictions

    path = tmp_path / "predictions.csv"
    path.write_text("id,label,true_class,group\na.jpg,0.123457,dog,p1\nb.jpg,0.999999881,cat,p2"
                    "\nc.jpg,1.2e-07,cat,p3\n")
    names, probs, labels = val_predictions.read(path, ["cat", "dog"])
    assert names == ["a.jpg", "b.jpg", "c.jpg"] and labels.tolist() == [1, 0, 0]
    np.testing.assert_array_equal(probs[:, 1], [0.123457, 0.999999881, 1.2e-07])
    np.testing.assert_array_equal(probs[:, 0], 1 - probs[:, 1])


def test_the_rows_checked_and_the_tolerance_of_another_models_probabilities() -> None:
    """The pictured rows, then the 4 the CSV is least sure of; a model whose probabilities
    differ beyond the tolerance of its features' precision is refused, naming both files."""
    from stages import val_predictions

    p1 = np.array([0.99, 0.5, 0.02, 0.6, 0.45, 0.9, 0.3, 0.7])
    probs = np.stack([1 - p1, p1], axis=1)
    np.testing.assert_array_equal(val_predictions.check_rows(probs, np.array([2, 0])),
                                  [2, 0, 1, 4, 3, 6])
    rows = np.array([2, 0, 1, 4])
    names = [f"{r}.jpg" for r in rows]
    near = probs[rows] + [[-0.004, 0.004]]  # float32 rounding, TF32 features on a GPU
    val_predictions.check_same_model("p.csv", "m.h5", probs[rows], near, names, ["float32"] * 2)
    moved = probs[rows] + [[0, 0], [0, 0], [0.03, -0.03], [0, 0]]  # another model's, at 0.5
    with pytest.raises(val_predictions.ModelMismatch,
                       match=r"p\.csv: holds the validation predictions of another model than "
                             r"m\.h5 \(for 1\.jpg it says 0\.5000, 0\.5000, m\.h5 gives "
                             r"0\.5300, 0\.4700\).*Give --model the model that wrote it"):
        val_predictions.check_same_model("p.csv", "m.h5", probs[rows], moved, names,
                                         ["float32", "float32"])
    # bfloat16 features round 8 times coarser: the same difference passes.
    val_predictions.check_same_model("p.csv", "m.h5", probs[rows], moved, names,
                                     ["mixed_bfloat16", "float32"])


# --- decoding: the pixels `resize` writes ------------------------------------------------------

def test_every_format_decodes_to_the_pixels_resize_writes(tmp_path: Path) -> None:
    """DICOM (named and extensionless), 16-bit PNG, JPEG: the same pixels as the test split's
    resized file holds, so the networks see what they saw in the pipeline."""
    folder = tmp_path / "scans"
    folder.mkdir()
    rng = np.random.default_rng(2)
    ramp = np.clip(np.linspace(0, 3000, 90 * 70).reshape(90, 70) + rng.normal(0, 40, (90, 70)),
                   0, 4000)
    (folder / "a.dcm").write_bytes(imagegen.dicom(ramp.astype(np.uint16), bits_stored=12))
    (folder / "IM0002").write_bytes(imagegen.dicom(ramp.T.astype(np.uint16), bits_stored=12))
    cv2.imwrite(str(folder / "b.png"), (ramp * 20).astype(np.uint16))
    imagegen.write(folder / "c.jpg", imagegen.image(rng, 0))
    source = Source(folder)
    listing = list_test(source)
    resize.resize_split(source, listing, str(tmp_path / "test.h5"), 75, 2, split="test")
    with h5py.File(tmp_path / "test.h5") as f:
        resized = dict(zip(f["names"].asstr()[:], f["images"][:], strict=True))
    assert sorted(resized) == ["IM0002", "a.dcm", "b.png", "c.jpg"]
    found, _ = inputs.entries([folder])
    pixels = inputs.load_all([folder], 75)
    for entry, got in zip(found, pixels, strict=True):
        np.testing.assert_array_equal(got, resized[entry.name], err_msg=entry.name)
    # A file named on its own is read whatever its name says.
    np.testing.assert_array_equal(inputs.load_all([folder / "IM0002"], 75)[0],
                                  resized["IM0002"])


def test_a_file_that_cannot_be_decoded_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(DataError, match=r"broken\.jpg \(.*\)"):
        inputs.load_all([tmp_path / "broken.jpg"], 75)


# --- pictures ------------------------------------------------------------------------------------

def test_the_overlay_keeps_the_image_where_the_map_is_zero() -> None:
    image = np.full((8, 8, 3), 100, np.uint8)
    m = np.zeros((8, 8), np.float32)
    m[0, 0], m[7, 7] = 2.0, -1.0
    out = cam.overlay(image, m)
    assert (out[3, 3] == 100).all()
    assert out[0, 0, 0] > 150 and out[0, 0, 2] < 100  # red: raised the score
    assert out[7, 7, 2] > out[7, 7, 0]  # blue: lowered it


def test_the_record_has_what_classify_needs(baseline: Path) -> None:
    from stages import model_record
    from stages.backbones import BACKBONES
    from stages.h5io import md5

    record = model_record.read(baseline / "models/model_2.h5")
    files = [baseline / "keras_weights" / BACKBONES[n].weights_file
             for n in ("inception_v3", "xception")]
    assert record == ModelRecord(str(baseline / "models/model_2.h5"), ["cat", "dog"],
                                 ["inception_v3", "xception"], ["keras_weights"] * 2,
                                 ["network"] * 2, ["float32"] * 2, [md5(f) for f in files],
                                 75, 0.5, 1.0, ["tensorflow"] * 2, [""] * 2)
    assert record.engine == "tensorflow"


# --- an outside labelled set: --metrics, with a stub in place of the networks -------------------

OUTSIDE = ["NORMAL", "PNEUMONIA"]
# Each image's red, which the stub's p(PNEUMONIA) is (/255): the classes overlap, so that every
# score and interval is something between 0 and 1, and the threshold decides some of them.
REDS = {"NORMAL": [20, 60, 90, 110, 150, 200], "PNEUMONIA": [70, 140, 160, 180, 220, 240, 250]}


class StubClassifier:
    """Classifier's face to classify.classify(): p(class 1) is an image's mean red / 255 (the
    images are plain colours), decided at the model's threshold; no network, no TensorFlow."""

    width = 16

    def __init__(self, model_path: str) -> None:
        from stages import model_record

        self.record = model_record.read(model_path)
        self.classes, self.threshold = self.record.classes, self.record.threshold

    @classmethod
    def load(cls, model_path: str = "models/model_2.h5", **_: object) -> StubClassifier:
        return cls(model_path)

    def explain(self, pixels: np.ndarray, size: int | None = None, maps: bool = False) -> Any:
        from types import SimpleNamespace

        from stages import decision

        probs = stub_probs(pixels[..., 0].mean(axis=(1, 2)))
        return SimpleNamespace(probs=probs, predicted=decision.predicted(probs, self.threshold))


def stub_probs(red: np.ndarray) -> np.ndarray:
    p1 = np.asarray(red, np.float64) / 255
    return np.stack([1 - p1, p1], axis=1).astype(np.float32)


def stub_model(path: Path, threshold: float = 0.45, classes: list[str] = OUTSIDE) -> Path:
    """A model file's record (what classify reads before TensorFlow), no weights."""
    with h5py.File(path, "w") as f:
        f.attrs.update({"classes": classes, "networks": ["xception"],
                        "weights": ["none, seed 3"], "width": StubClassifier.width,
                        "threshold": threshold, "temperature": 1.0})
    return path


def outside_folder(root: Path, reds: dict[str, list[int]] = REDS) -> Path:
    """Class folders of plain PNGs, two images per patient (`p<k>_<i>.png`)."""
    for cls, values in reds.items():
        (root / cls).mkdir(parents=True)
        for i, red in enumerate(values):
            img = np.full((20, 24, 3), (40, 40, red), np.uint8)  # BGR for OpenCV
            cv2.imwrite(str(root / cls / f"p{cls[0]}{i // 2}_{i}.png"), img)
    return root


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """classify.main with StubClassifier in the networks' place, run in an empty folder (no
    params.yaml: the defaults)."""
    from stages import classify, devices

    monkeypatch.setattr(classify, "Classifier", StubClassifier)
    monkeypatch.setattr(devices, "backend", lambda: "stub")  # quiet.tensorflow() not called
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def reference(classes: list[str], reds: dict[str, list[int]], threshold: float, clip: float,
              groups: np.ndarray | None = None) -> dict[str, Any]:
    """predict's test metrics of the images (what reports/predict.json keeps of summary())."""
    from stages import predict

    labels = np.array([i for i, c in enumerate(classes) for _ in reds[c]])
    raw = stub_probs([r for c in classes for r in reds[c]]).astype(np.float64)
    stats = predict.summary(predict.clip_probs(raw, clip), classes, labels, raw, threshold,
                            groups, None if groups is None else 0)
    return {k: v for k, v in stats.items() if predict.is_metric(k)} | {
        "interval_unit": stats["interval_unit"]}


def test_metrics_are_predicts_test_metrics_and_the_confusion_counts(
        stubbed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`classify DIR --metrics FILE`: predict's test metrics of the folder's images (summary(),
    the log loss of the probabilities clipped by the default clip), the model's threshold, the
    confusion counts at it; the scores' table on stdout, not the per-image one."""
    from stages import classify

    folder = outside_folder(tmp_path / "outside")
    classify.main([str(folder), "--model", str(stub_model(tmp_path / "m.h5")),
                   "--metrics", "out.json"])
    got = json.loads((stubbed / "out.json").read_text())
    want = reference(OUTSIDE, REDS, 0.45, 0.005)
    assert {k: got[k] for k in want} == want
    assert want["test_loss"] > 0 and want["test_sensitivity_low"] < want["test_sensitivity"]
    assert got["interval_unit"] == "image" and got["n_skipped"] == 0
    assert (got["threshold"], got["clip"], got["group_pattern"]) == (0.45, 0.005, "")
    # red ≥ 0.45·255 = 114.75 is PNEUMONIA: NORMAL 150, 200; PNEUMONIA but 70
    assert got["confusion"] == {"NORMAL": {"NORMAL": 4, "PNEUMONIA": 2},
                                "PNEUMONIA": {"NORMAL": 1, "PNEUMONIA": 6}}
    assert got["test_sensitivity"] == 6 / 7 and got["test_specificity"] == 4 / 6
    out = capsys.readouterr().out
    assert out.startswith(f"classify: outside set {folder}: 13 images (NORMAL 6, PNEUMONIA 7), "
                          "threshold 0.45\n"), out
    assert "predicted_class" not in out and ".png" not in out  # no per-image rows


def test_metrics_with_out_a_broken_image_and_params_groups(
        stubbed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """params.yaml of the current folder gives clip and group_pattern (intervals by patient);
    `--out` gets the rows with their true class; an image that cannot be decoded is named and
    skipped, the others' metrics written with n_skipped, exit status 1."""
    from stages import classify

    (stubbed / "params.yaml").write_text("clip: 0.01\nseed: 5\ngroup_pattern: '^(p[NP]\\d+)_'\n")
    folder = outside_folder(tmp_path / "outside")
    (folder / "NORMAL/broken.png").write_bytes(b"not an image")
    with pytest.raises(SystemExit) as stop:
        classify.main([str(folder), "--model", str(stub_model(tmp_path / "m.h5")),
                       "--metrics", "out.json", "--out", "rows.csv"])
    assert str(stop.value.code) == (
        "classify: 1 of 14 images could not be decoded and were skipped (named above); the "
        "others are scored; the metrics of the 13 others are in out.json (n_skipped 1)")
    assert f"skipped {folder}/NORMAL/broken.png: cannot be decoded" in capsys.readouterr().err
    got = json.loads((stubbed / "out.json").read_text())
    groups = np.array([f"p{c[0]}{i // 2}" for c in OUTSIDE for i in range(len(REDS[c]))])
    want = reference(OUTSIDE, REDS, 0.45, 0.01, groups)
    assert {k: got[k] for k in want} == want and got["interval_unit"] == "group"
    assert (got["n_test"], got["n_skipped"], got["clip"]) == (13, 1, 0.01)
    assert got["group_pattern_missed"] == 0
    rows = list(csv.DictReader((stubbed / "rows.csv").open()))
    assert list(rows[0]) == ["path", *OUTSIDE, "true_class", "predicted_class"]
    assert [r["true_class"] for r in rows] == ["NORMAL"] * 6 + ["PNEUMONIA"] * 7
    assert rows[0]["path"] == f"{folder}/NORMAL/pN0_0.png"


def test_group_pattern_option_replaces_params_and_a_miss_is_said(
        stubbed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--group-pattern` over params.yaml's: `''` is none (by image); a pattern that misses
    paths says so as predict does, and the intervals are by image."""
    from stages import classify

    (stubbed / "params.yaml").write_text("group_pattern: '^(p[NP]\\d+)_'\n")
    folder = outside_folder(tmp_path / "outside")
    model = str(stub_model(tmp_path / "m.h5"))
    classify.main([str(folder), "--model", model, "--metrics", "a.json", "--group-pattern", ""])
    assert json.loads((stubbed / "a.json").read_text())["interval_unit"] == "image"
    capsys.readouterr()
    classify.main([str(folder), "--model", model, "--metrics", "b.json",
                   "--group-pattern", "^(pN\\d+)_"])
    got = json.loads((stubbed / "b.json").read_text())
    assert (got["interval_unit"], got["group_pattern_missed"]) == ("image", 7)
    err = capsys.readouterr().err
    assert "group_pattern `^(pN\\d+)_` does not match 7 of 13 test path(s)" in err
    assert "(b.json: interval_unit image)" in err


@pytest.mark.parametrize(("folders", "said"), [
    (["NORMALL", "PNEUMONIA"], "test folder(s) NORMALL are not training classes (NORMAL, "
                               "PNEUMONIA), while PNEUMONIA are; did you mean NORMALL → NORMAL?"),
    (["normal", "pneumonia"], "test folder(s) normal, pneumonia differ from the training "
                              "classes NORMAL, PNEUMONIA only in case"),
    (["patient1", "patient2"], "holds folders patient1, patient2, not one folder per class: "
                               "--metrics scores a labelled set"),
], ids=["misspelled", "case", "not-classes"])
def test_folders_that_are_not_the_classes_stop_before_tensorflow(
        folders: list[str], said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """resize@test's message (testset.read's), in one line, before TensorFlow starts and
    before anything is decoded or written."""
    from stages import classify, devices, inputs

    monkeypatch.setattr(devices, "backend", lambda: pytest.fail("TensorFlow was started"))
    monkeypatch.setattr(inputs, "decoded", lambda *a: pytest.fail("images were decoded"))
    monkeypatch.chdir(tmp_path)
    folder = outside_folder(tmp_path / "outside", {f: [100, 200] for f in folders})
    with pytest.raises(SystemExit) as stop:
        classify.main([str(folder), "--model", str(stub_model(tmp_path / "m.h5")),
                       "--metrics", "out.json"])
    message = str(stop.value.code)
    assert message.startswith(f"classify: {folder}: ") and said in message, message
    assert "\n" not in message and "dvc repro" not in message
    assert "docs/data.md, 'Your own images: the layouts'" in message
    assert not (tmp_path / "out.json").exists()


def test_metrics_takes_exactly_one_folder(capsys: pytest.CaptureFixture[str]) -> None:
    from stages import classify

    for args in (["a", "b", "--metrics", "m.json"], ["a", "--group-pattern", "x"],
                 ["a", "--metrics", "m.json", "--group-pattern", "("]):
        with pytest.raises(SystemExit) as stop:
            classify.main(args)
        assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--metrics scores one folder or .zip of class folders, got 2 paths" in err
    assert "--group-pattern groups --metrics' intervals: give --metrics FILE" in err
    assert "--group-pattern '(': not a regular expression" in err


def test_a_zip_or_a_wrapper_folder_names_rows_as_the_test_side(tmp_path: Path) -> None:
    """Names relative to the folder, a lone wrapper dropped (`NORMAL/pN0_0.png`, as resize@test
    names a test row); a zip of the folder gives the same names and labels."""
    import shutil

    from stages.classify import outside_set

    outside_folder(tmp_path / "wrap/outside", {"PNEUMONIA": [1], "NORMAL": [2, 3]})
    shutil.make_archive(str(tmp_path / "outside"), "zip", tmp_path / "wrap", "outside")
    for path in (tmp_path / "wrap", tmp_path / "wrap/outside", tmp_path / "outside.zip"):
        got = outside_set(path, OUTSIDE)
        assert got.names == ["NORMAL/pN0_0.png", "NORMAL/pN0_1.png", "PNEUMONIA/pP0_0.png"]
        assert list(got.labels) == [0, 0, 1]
        assert got.truth(OUTSIDE)[got.found[2].shown] == "PNEUMONIA"
    with pytest.raises(DataError, match=r"--metrics .*m\.h5: is a file, not a folder or \.zip"):
        outside_set(stub_model(tmp_path / "m.h5"), OUTSIDE)


def test_the_table_shows_each_score_with_its_interval_and_the_confusion() -> None:
    from stages.classify import metrics_table

    stats = {"n_test": 300, "classes": OUTSIDE, "threshold": 0.32, "interval_unit": "group",
             "test_loss": 0.4123, "test_accuracy": 0.853, "test_accuracy_low": 0.808,
             "test_accuracy_high": 0.889, "test_auc": 0.91, "test_auc_low": 0.87,
             "test_auc_high": 0.94, "test_balanced_accuracy": 0.79,
             "test_balanced_accuracy_low": 0.74, "test_balanced_accuracy_high": 0.83,
             "test_sensitivity": 0.956, "test_sensitivity_low": 0.915,
             "test_sensitivity_high": 0.977, "test_specificity": 0.625,
             "test_specificity_low": None, "test_specificity_high": None, "test_ece": 0.081,
             "confusion": {"NORMAL": {"NORMAL": 75, "PNEUMONIA": 45},
                           "PNEUMONIA": {"NORMAL": 8, "PNEUMONIA": 172}}}
    lines = metrics_table(stats, "data/outside").splitlines()
    assert lines[0] == ("classify: outside set data/outside: 300 images (NORMAL 120, PNEUMONIA "
                        "180), threshold 0.32")
    for label, cell in (("log loss", "0.412"), ("accuracy", "0.853  (0.808–0.889)"),
                        ("AUC", "0.910  (0.870–0.940)"),
                        ("balanced accuracy", "0.790  (0.740–0.830)"),
                        ("sensitivity (PNEUMONIA)", "0.956  (0.915–0.977)"),
                        ("specificity (NORMAL)", "0.625"), ("ECE", "0.081")):
        assert any(re.fullmatch(rf"  {re.escape(label)} +{re.escape(cell)}", ln)
                   for ln in lines), (label, lines)
    assert "  (95 % intervals, by group (group_pattern))" in lines
    i = lines.index("  confusion (rows true, columns predicted):")
    assert lines[i + 1].split() == OUTSIDE
    assert lines[i + 2].split() == ["NORMAL", "75", "45"]
    assert lines[i + 3].split() == ["PNEUMONIA", "8", "172"]


# --- end to end on the pipeline's run ------------------------------------------------------------

@pytest.mark.pipeline
def test_classify_scores_what_predict_scores(baseline: Path, tmp_path: Path) -> None:
    """The CLI on the test folder (Kaggle names), a DICOM and a broken file, with the pipeline's
    model made confident (its Dense kernel scaled), so that a different feature would show:
    the probabilities are predict's before clip, to 1e-5; the broken file is named, the rest
    scored, exit status 1; --cam writes a PNG per image and cam.h5."""
    from stages import predict

    model = tmp_path / "model.h5"
    model.write_bytes((baseline / "models/model_2.h5").read_bytes())
    with h5py.File(model, "a") as f:
        kernel = f["model_weights/dense/dense/kernel"]
        kernel[...] = kernel[...] * 3000
    test, raw, _ = predict.predict(str(model), str(baseline / "data/features/test/fused.h5"))
    assert raw[:, 1].std() > 0.01, raw  # not all alike: the comparison can fail
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "broken.jpg").write_bytes(b"not an image")
    (extra / "scan.dcm").write_bytes(imagegen.dicom(np.arange(80 * 60, dtype=np.uint16)
                                                    .reshape(80, 60)))
    work = tmp_path / "work"
    work.mkdir()
    (work / "keras_weights").symlink_to(baseline / "keras_weights")  # the model's weights
    p = subprocess.run(
        [sys.executable, "-m", "stages.classify", str(baseline / "data/raw/test"),
         str(extra / "broken.jpg"), str(extra / "scan.dcm"), "--model", str(model),
         "--out", "out.csv", "--cam", "cam"],
        cwd=work, capture_output=True, text=True, env={"PYTHONPATH": str(REPO)})
    assert p.returncode == 1, p.stderr
    assert f"skipped {extra / 'broken.jpg'}: cannot be decoded" in p.stderr
    assert "Traceback" not in p.stderr
    rows = list(csv.DictReader((work / "out.csv").open()))
    assert list(rows[0]) == ["path", "cat", "dog", "predicted_class"]
    got = {Path(r["path"]).name: [float(r["cat"]), float(r["dog"])] for r in rows}
    assert set(got) == {f"{i}.jpg" for i in test.ids} | {"scan.dcm"}
    for i, row_probs in zip(test.ids, raw, strict=True):
        np.testing.assert_allclose(got[f"{i}.jpg"], row_probs, atol=1e-5)
    for r in rows:
        assert r["predicted_class"] == ("dog" if float(r["dog"]) >= 0.5 else "cat")
    with h5py.File(work / "cam/cam.h5") as f:
        assert f["maps"].shape == (len(rows), 75, 75) and f["maps"].dtype == np.float32
        assert list(f["names"].asstr()[:]) == [r["path"] for r in rows]
        assert list(f["classes"].asstr()[:]) == ["cat", "dog"]
        assert [["cat", "dog"][c] for c in f["predicted"][:]] == \
            [r["predicted_class"] for r in rows]
    assert len(list((work / "cam").glob("*.png"))) == len(rows)


@pytest.mark.pipeline
def test_mistakes_are_drawn_by_the_model_that_wrote_the_predictions_only(
        baseline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--mistakes picks rows by reports/val/predictions.csv and captions them by --model: with
    the model that wrote the CSV, the picture; with another (the pipeline's, its Dense kernel
    scaled), one line naming both files and the fix, and no picture."""
    from stages import val_predictions
    from stages.classify import explain_mistakes

    other = tmp_path / "other.h5"
    other.write_bytes((baseline / "models/model_2.h5").read_bytes())
    with h5py.File(other, "a") as f:
        kernel = f["model_weights/dense/dense/kernel"]
        kernel[...] = kernel[...] * 3000  # as confident as the e2e test makes it
    monkeypatch.chdir(baseline)  # read only: the model's weights are its keras_weights/
    csv_path, resized = "reports/val/predictions.csv", "data/resized/train.h5"
    shown = explain_mistakes(Classifier.load(), 3, csv_path, resized, str(tmp_path / "m.png"))
    assert shown == 3 and (tmp_path / "m.png").stat().st_size > 10_000
    with pytest.raises(val_predictions.ModelMismatch,
                       match=rf"{csv_path}: holds the validation predictions of another model "
                             rf"than {other} .*Give --model the model that wrote it"):
        explain_mistakes(Classifier.load(str(other)), 3, csv_path, resized,
                         str(tmp_path / "other.png"))
    assert not (tmp_path / "other.png").exists()
    # Issue 32: after a run with folds, the CSV's `label` is out of fold (other heads'), and
    # its `model_label` the saved head's: the model is checked against that column.
    rows = list(csv.DictReader(Path(csv_path).read_text().splitlines()))
    folded = tmp_path / "folded.csv"
    with folded.open("w", newline="") as f:
        w = csv.DictWriter(f, [*rows[0], "fold", "model_label"])
        w.writeheader()
        for i, r in enumerate(rows):
            oof = min(max(float(r["label"]) + (0.3 if i % 2 else -0.3), 0.0), 1.0)
            w.writerow({**r, "label": repr(oof), "fold": str(i % 2 + 1),
                        "model_label": r["label"]})
    assert explain_mistakes(Classifier.load(), 3, str(folded), resized,
                            str(tmp_path / "f.png")) == 3
    assert (tmp_path / "f.png").stat().st_size > 10_000
    without = tmp_path / "without.csv"  # the same rows without the saved head's column
    without.write_text("\n".join(",".join(line.split(",")[:-1])
                                 for line in folded.read_text().splitlines()) + "\n")
    with pytest.raises(val_predictions.ModelMismatch):
        explain_mistakes(Classifier.load(), 3, str(without), resized, str(tmp_path / "w.png"))


@pytest.mark.pipeline
def test_the_readmes_classify_commands_run_as_written(baseline: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """README, "Classify images": each `python3 -m stages.classify` line of its bash block, and
    its Python lines, in a copy of the pipeline's run with new images where the lines name
    them."""
    import shlex

    from conftest import copy_project

    root = copy_project(baseline, tmp_path / "p")
    rng = np.random.default_rng(4)
    for name in ("data/raw/new/IMG_0001.jpg", "data/raw/new/IMG_0002.jpg", "a.jpg"):
        imagegen.write(root / name, imagegen.image(rng, 1))
    (root / "scan.dcm").write_bytes(imagegen.dicom(np.arange(64 * 64, dtype=np.uint16)
                                                   .reshape(64, 64)))
    for i in range(1, 7):  # the test images again, as an outside set of class folders
        (root / "data/outside" / ["cat", "dog"][i % 2]).mkdir(parents=True, exist_ok=True)
        (root / f"data/outside/{['cat', 'dog'][i % 2]}/{i}.jpg").write_bytes(
            (root / f"data/raw/test/{i}.jpg").read_bytes())
    section = (REPO / "README.md").read_text().split("## Classify images", 1)[1].split("\n## ")[0]
    lines = [ln.split("  #")[0].strip() for ln in section.splitlines()
             if ln.startswith("python3 -m stages.classify")]
    assert len(lines) == 5, lines
    medical = (REPO / "docs/medical.md").read_text().split("## An outside labelled set", 1)[1]
    shown = [ln.strip() for ln in medical.split("\n## ")[0].splitlines()
             if ln.startswith("python3 -m stages.classify")]
    assert shown and set(shown) <= set(lines), shown  # docs/medical.md's: run here too
    said = []
    for line in lines:
        args = shlex.split(line)
        p = subprocess.run([sys.executable, *args[1:]], cwd=root, capture_output=True,
                           text=True, env={"PYTHONPATH": str(root)})
        assert p.returncode == 0, (line, p.stderr)
        said.append(p.stdout)
    assert said[0].split()[:4] == ["path", "cat", "dog", "predicted_class"], said[0]
    assert "data/raw/new/IMG_0001.jpg" in said[0]
    assert len(list(csv.DictReader((root / "new.csv").open()))) == 2
    assert (root / "reports/cam/cam.h5").is_file()
    assert (root / "reports/val_mistakes_cam.png").is_file()
    assert (root / "exported/classifier/saved_model.pb").is_file()
    assert said[4].startswith("classify: outside set data/outside: 6 images (cat 3, dog 3), "
                              "threshold 0.5\n"), said[4]
    assert "1.jpg" not in said[4]  # the scores' table, not the rows
    scores = json.loads((root / "reports/outside.json").read_text())
    assert (scores["n_test"], scores["classes"], scores["threshold"]) == (6, ["cat", "dog"], 0.5)
    assert (scores["interval_unit"], scores["clip"], scores["n_skipped"]) == ("image", 0.005, 0)
    c = scores["confusion"]
    assert [sum(c[t].values()) for t in ("cat", "dog")] == [3, 3]
    assert scores["test_sensitivity"] == c["dog"]["dog"] / 3
    assert scores["test_specificity"] == c["cat"]["cat"] / 3
    for key in ("test_loss", "test_auc", "test_ece", "test_accuracy_low", "test_auc_high"):
        assert key in scores, key
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "the README's Python lines"
    monkeypatch.chdir(root)
    scope: dict[str, object] = {}
    exec(code.group(1), scope)  # the README's own lines
    assert scope["probs"].shape == (1, 2) and scope["maps"].shape == (1, 75, 75)  # type: ignore[attr-defined]


def test_a_network_with_a_file_of_its_own_and_its_scaling_is_rebuilt_as_extracted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model trained on features of a weight file that is not Keras' own (docs/networks.md,
    'Other weights'), scaled to [0, 1]: the classifier rebuilds that network, scaled so, and
    gives the extractor's features."""
    import keras

    from stages.backbones import BACKBONES
    from stages.h5io import md5
    from stages.keras_extract import extractor

    monkeypatch.chdir(tmp_path)
    (tmp_path / "keras_weights").mkdir()
    keras.utils.set_random_seed(7)
    net = keras.applications.Xception(include_top=False, weights=None, input_shape=(75, 75, 3),
                                      pooling="avg")
    net.save_weights(tmp_path / "keras_weights/mine.weights.h5")
    path = write_model(tmp_path / "m.h5", ONE, 75, np.zeros((2048, 1)), np.zeros(1), ["a", "b"],
                       weights="keras_weights/mine.weights.h5")
    with h5py.File(path, "a") as f:
        f.attrs["preprocess"] = ["scale_0_1"]
        f.attrs["weights_md5"] = ["0" * 32]  # another version of the file made the features
    with pytest.raises(ModelError, match="made with another keras_weights/mine.weights.h5 "
                                         r"\(md5 0+\)\. Check out the keras_weights\.dvc"):
        Classifier.load(str(path))
    with h5py.File(path, "a") as f:
        f.attrs["weights_md5"] = [md5(tmp_path / "keras_weights/mine.weights.h5")]
    pixels = smooth_images(3, 75)
    got = Classifier.load(str(path)).explain(pixels).features
    ref = extractor(BACKBONES["xception"], 75, "keras_weights/mine.weights.h5", "float32", 0,
                    "scale_0_1").predict_on_batch(pixels)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    own = extractor(BACKBONES["xception"], 75, "keras_weights/mine.weights.h5", "float32", 0
                    ).predict_on_batch(pixels)
    assert not np.allclose(own, ref, rtol=1e-3), "the scaling changes the features"


def test_a_cam_folder_of_the_users_own_pngs_is_refused_and_kept(tmp_path: Path) -> None:
    """`--cam` replaces an earlier output whole: a folder of the user's own PNGs (no cam.h5,
    other names) would have been deleted with it."""
    from stages import destinations

    own = tmp_path / "scans"
    own.mkdir()
    (own / "scan01.png").write_bytes(b"mine")
    with pytest.raises(destinations.OutputError, match=r"--cam .*scans: holds scan01\.png"):
        destinations.check_cam_folder(own)
    (own / "scan01.png").rename(own / "0_scan01.png")  # named as --cam names, but no cam.h5
    with pytest.raises(destinations.OutputError, match=r"holds no cam\.h5"):
        destinations.check_cam_folder(own)
    (own / "cam.h5").write_bytes(b"")
    destinations.check_cam_folder(own)  # an earlier --cam output: replaced
    destinations.check_cam_folder(tmp_path / "new")
