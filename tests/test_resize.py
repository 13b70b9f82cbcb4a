"""The resize stage on real generated files: skip reports, fatal test errors, and the same bytes
whatever the input packaging (folder, zip, zip with a top folder) and the number of workers.

Stage functions are called directly (no dvc); `main` runs in a temporary folder with its own
params.yaml, as dvc would run it.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import imagegen
import numpy as np
import pytest
import yaml
from test_images import BAD, LITTER, noisy_jpeg, write, zip_of

from stages import h5io, limits, resize
from stages.images import DataError, Source, list_test, list_train

REPO = Path(__file__).resolve().parents[1]
W = 32
N_PER_CLASS, N_TEST = 40, 9  # over one write batch (64) and many chunks per worker
# Each kind of undecodable file, named like the good ones: name → (bytes, reason)
BAD_TRAIN = {f"{('cat', 'dog')[i % 2]}.{50 + i}.jpg": bad for i, bad in enumerate(BAD.values())}
SKIPPED = ["cat.50.jpg", "cat.52.jpg", "dog.51.jpg", "dog.53.jpg"]  # in output order


def folder_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/ (Kaggle names, uppercase extensions, every kind of bad file, litter), test/."""
    root = tmp_path_factory.mktemp("data")
    train = imagegen.kaggle_train(root / "train", N_PER_CLASS, w=40, h=30)
    (train / "dog.3.jpg").rename(train / "dog.3.JPG")
    imagegen.write(train / "cat.41.PNG", imagegen.image(np.random.default_rng(5), 0, 40, 30))
    imagegen.write(train / "dog.41.jpeg", imagegen.image(np.random.default_rng(6), 1, 40, 30))
    write(train, {name: data for name, (data, _) in BAD_TRAIN.items()} | LITTER)
    imagegen.test_set(root / "test", N_TEST, w=40, h=30)
    write(root / "test", {"Thumbs.db": b"x"})
    return root


def run_train(src: Path, out: Path, workers: int = 2) -> tuple[Path, list[tuple[str, str]]]:
    source = Source(src)
    path = out / "train.h5"
    return path, resize.resize_split(source, list_train(source), str(path), W, workers)


def run_test(src: Path, out: Path, workers: int = 2) -> Path:
    source = Source(src)
    path = out / "test.h5"
    resize.resize_split(source, list_test(source), str(path), W, workers, split="test")
    return path


def test_bad_training_images_are_skipped_and_listed(data: Path, tmp_path: Path) -> None:
    path, skipped = run_train(data / "train", tmp_path)
    assert [name for name, _ in skipped] == SKIPPED
    for name, reason in skipped:
        assert BAD_TRAIN[name][1] in reason
    with h5py.File(path) as f:
        names = list(f["names"][:].astype(str))
        assert f["images"].shape == (2 * N_PER_CLASS + 2, W, W, 3)
        assert f["images"].dtype == np.uint8
        assert list(f["labels"][:]) == [0] * (N_PER_CLASS + 1) + [1] * (N_PER_CLASS + 1)
        assert list(f.attrs["classes"]) == ["cat", "dog"]
        assert names[:3] == ["cat.0.jpg", "cat.1.jpg", "cat.2.jpg"]
        assert "cat.41.PNG" in names and "dog.3.JPG" in names and "dog.41.jpeg" in names
        red = f["images"][0].reshape(-1, 3).mean(axis=0)  # cat.0 is pure red, stored as RGB
        assert red[0] > 240 and red[1:].max() < 15


def test_zip_and_folder_give_identical_files(data: Path, tmp_path: Path) -> None:
    train, test = folder_files(data / "train"), folder_files(data / "test")
    (top := tmp_path / "top").mkdir()
    sources = {
        "folder": (data / "train", data / "test"),
        "zip": (zip_of(tmp_path / "train.zip", train), zip_of(tmp_path / "test.zip", test)),
        # as Kaggle ships them (and `zip -r test.zip test` makes them): members inside the
        # folder the zip is named after, plus what macOS adds
        "zip-top": (
            zip_of(top / "train.zip", {
                **{f"train/{k}": v for k, v in train.items()}, "__MACOSX/train/._cat.0.jpg": b"x"}),
            zip_of(top / "test.zip", {f"test/{k}": v for k, v in test.items()}),
        ),
    }
    outputs = {}
    for kind, (tr, te) in sources.items():
        out = tmp_path / kind
        train_h5, skipped = run_train(tr, out)
        outputs[kind] = (train_h5.read_bytes(), run_test(te, out).read_bytes(), len(skipped))
    assert outputs["zip"] == outputs["folder"]
    assert outputs["zip-top"] == outputs["folder"]


def test_same_bytes_across_worker_counts_and_runs(data: Path, tmp_path: Path) -> None:
    outputs = []
    for i, workers in enumerate([1, 2, 4, 2]):
        out = tmp_path / str(i)
        train_h5, _ = run_train(data / "train", out, workers)
        outputs.append((train_h5.read_bytes(), run_test(data / "test", out, workers).read_bytes()))
    assert all(o == outputs[0] for o in outputs[1:])


def test_class_folders_from_a_zip_with_broken_files(tmp_path: Path) -> None:
    # Like Microsoft's PetImages: one folder per class, a few broken files, Thumbs.db litter.
    imagegen.class_folders(tmp_path / "PetImages", ("Dog", "Cat"), 3)
    files = {f"PetImages/{k}": v for k, v in folder_files(tmp_path / "PetImages").items()}
    files |= {"PetImages/Cat/666.jpg": b"", "PetImages/Dog/11702.jpg": BAD["truncated"][0],
              "PetImages/Cat/Thumbs.db": b"x", "PetImages/Dog/Thumbs.db": b"x"}
    path, skipped = run_train(zip_of(tmp_path / "pets.zip", files), tmp_path / "out")
    assert [s[0] for s in skipped] == ["PetImages/Cat/666.jpg", "PetImages/Dog/11702.jpg"]
    with h5py.File(path) as f:
        assert list(f.attrs["classes"]) == ["Cat", "Dog"]
        assert list(f["labels"][:]) == [0, 0, 0, 1, 1, 1]
        assert list(f["names"][:].astype(str)) == [
            "Cat/0.jpg", "Cat/1.jpg", "Cat/2.jpg", "Dog/0.jpg", "Dog/1.jpg", "Dog/2.jpg"]
        # imagegen colours label 0 reddish: that is Dog here, which sorts second
        assert f["images"][3:, ..., 0].mean() > f["images"][3:, ..., 2].mean()


def test_all_bad_training_set_stops_and_leaves_nothing(tmp_path: Path) -> None:
    write(tmp_path / "train", {f"cat.{i}.jpg": b for i, (b, _) in enumerate(BAD.values())}
          | {"dog.0.jpg": b""})
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"none of the 5 training images could be decoded.*cat\.0"):
        run_train(tmp_path / "train", out)
    assert list(out.iterdir()) == []


def test_one_class_remaining_stops(tmp_path: Path) -> None:
    write(tmp_path / "train", {"cat.0.jpg": noisy_jpeg(), "cat.1.jpg": noisy_jpeg(seed=1),
                               "dog.0.jpg": b"", "dog.1.jpg": BAD["html"][0]})
    out = tmp_path / "out"
    with pytest.raises(DataError, match="after skipping 2 undecodable images only class 'cat'"):
        run_train(tmp_path / "train", out)
    assert list(out.iterdir()) == []


def test_undecodable_test_images_stop_naming_every_one(data: Path, tmp_path: Path) -> None:
    test = write(tmp_path / "test", folder_files(data / "test")
                 | {"3.jpg": BAD["truncated"][0], "7.jpg": b"", "12.jpg": BAD["html"][0]})
    out = tmp_path / "out"
    with pytest.raises(DataError) as e:
        run_test(test, out)
    msg = str(e.value)
    assert msg.startswith(f"{test}: 3 test image(s) cannot be decoded")
    assert "3.jpg (truncated JPEG" in msg and "7.jpg (empty file" in msg and "12.jpg (cannot" in msg
    assert list(out.iterdir()) == []  # no test.h5, not even a temporary one


@pytest.fixture
def stage_dir(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder to run `main` in, as dvc would: params.yaml pointing at the generated data, and
    the (empty) local weights folder the extract stages depend on."""
    params = {"train_data": str(data / "train"), "test_data": str(data / "test"), "width": 75}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "keras_weights").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def main_args(split: str, *more: str) -> list[str]:
    """The arguments dvc.yaml gives the stage for `split`."""
    return ["--split", split, "--out", f"out/{split}.h5", "--skipped",
            f"out/{split}_skipped.csv", "--report", f"reports/resize/{split}.json", *more]


def test_main_reports_skips_counts_and_one_summary_line(stage_dir: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    resize.main(main_args("train", "--workers", "2"))
    resize.main(main_args("test", "--workers", "2"))
    n_train = 2 * N_PER_CLASS + 2
    assert capsys.readouterr().out.splitlines() == [
        f"resize train: {n_train} images (classes cat, dog) at 75×75; skipped {len(BAD)} "
        f"undecodable (see out/train_skipped.csv), ignored {len(LITTER)} non-image files",
        f"resize test: {N_TEST} images (Kaggle ids) at 75×75; skipped 0 undecodable (see "
        "out/test_skipped.csv), ignored 1 non-image files",
    ]
    rows = list(csv.reader((stage_dir / "out/train_skipped.csv").open()))
    assert rows[0] == ["file", "reason"]
    assert [r[0] for r in rows[1:]] == SKIPPED
    assert json.loads((stage_dir / "reports/resize/train.json").read_text()) == {
        "images": n_train, "skipped": len(BAD), "ignored_files": len(LITTER),
        "classes": ["cat", "dog"]}
    assert json.loads((stage_dir / "reports/resize/test.json").read_text()) == {
        "images": N_TEST, "skipped": 0, "ignored_files": 1}
    with h5py.File(stage_dir / "out/test.h5") as f:
        assert f["images"].shape == (N_TEST, 75, 75, 3)
        assert list(f["ids"][:]) == list(range(1, N_TEST + 1))
        assert "classes" not in f.attrs and "labels" not in f  # unlabelled: no classes


def test_main_stops_with_a_message_naming_the_files(stage_dir: Path, data: Path) -> None:
    bad_test = write(stage_dir / "test", {"1.jpg": noisy_jpeg(), "abc.jpg": b"", "x.y.png": b""})
    params = yaml.safe_load((stage_dir / "params.yaml").read_text()) | {"test_data": "test"}
    (stage_dir / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SystemExit, match=r"^resize test: test: 2 test image\(s\) cannot be "
                                         r"decoded.*abc\.jpg \(empty file.*x\.y\.png"):
        resize.main(main_args("test"))
    assert not list((stage_dir / "out").iterdir())  # no test.h5, not even a temporary one
    assert bad_test.exists()


def test_main_refuses_zero_workers(stage_dir: Path) -> None:
    with pytest.raises(SystemExit):
        resize.main(main_args("train", "--workers", "0"))


def test_main_stops_at_once_without_the_local_weights_folder(stage_dir: Path) -> None:
    """The extract stages depend on keras_weights/ even with `weights: imagenet`: without it
    DVC would stop after resize, its work done, with only an Errno."""
    (stage_dir / "keras_weights").rmdir()
    with pytest.raises(SystemExit, match=r"^resize train: keras_weights/: missing\. .*"
                                         r"mkdir -p keras_weights && dvc add keras_weights"):
        resize.main(main_args("train"))
    assert not (stage_dir / "out").exists()


def test_an_empty_test_folder_gets_advice_for_any_test_set(stage_dir: Path) -> None:
    (stage_dir / "empty").mkdir()
    params = yaml.safe_load((stage_dir / "params.yaml").read_text()) | {"test_data": "empty"}
    (stage_dir / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SystemExit) as e:
        resize.main(main_args("test"))
    msg = str(e.value)
    assert "empty: holds no images" in msg and "Score new images" in msg
    assert "kaggle competitions download" not in msg


# --- what cameras and file managers make -------------------------------------------------------


def test_a_motion_photo_in_the_test_set_is_its_still_image(data: Path, tmp_path: Path) -> None:
    # A phone's motion photo: the JPEG, then a short video. The test set must not stop on it.
    files = folder_files(data / "test")
    photos = write(tmp_path / "test", files | {"3.jpg": imagegen.motion_photo(files["3.jpg"])})
    with h5py.File(run_test(photos, tmp_path / "photos")) as f, \
            h5py.File(run_test(data / "test", tmp_path / "plain")) as g:
        np.testing.assert_array_equal(f["images"][:], g["images"][:])
        assert list(f["ids"][:]) == list(range(1, N_TEST + 1))


def mean_rgb_by_label(path: Path) -> dict[int, np.ndarray]:
    with h5py.File(path) as f:
        imgs, labels = f["images"][:].astype(float), f["labels"][:]
    return {int(c): imgs[labels == c].reshape(-1, 3).mean(axis=0) for c in np.unique(labels)}


def test_class_folders_behind_symbolic_links_keep_their_labels(tmp_path: Path) -> None:
    classes = ("Bird", "Cat", "Dog", "Zebra")  # imagegen colours them red, blue, green, yellow
    imagegen.class_folders(tmp_path / "all", classes, 2)
    train = tmp_path / "train"
    train.mkdir()
    for cls in classes:  # Cat and Zebra are real folders, Bird and Dog live elsewhere
        if cls in ("Bird", "Dog"):
            (train / cls).symlink_to(tmp_path / "all" / cls, target_is_directory=True)
        else:
            (tmp_path / "all" / cls).rename(train / cls)
    (train / "Dog/1.jpg").unlink()
    (train / "Dog/1.jpg").symlink_to(tmp_path / "all/Dog/0.jpg")  # a linked file too
    path, skipped = run_train(train, tmp_path / "out")
    assert skipped == []
    with h5py.File(path) as f:
        assert list(f.attrs["classes"]) == list(classes)
        assert list(f["labels"][:]) == [0, 0, 1, 1, 2, 2, 3, 3]
    for label, rgb in mean_rgb_by_label(path).items():
        bgr = imagegen.PALETTE[label]
        np.testing.assert_allclose(rgb, bgr[::-1], atol=12)


def test_a_labelled_test_set_behind_symbolic_links(tmp_path: Path) -> None:
    imagegen.class_folders(tmp_path / "elsewhere", ("Cat", "Dog"), 2)
    test = tmp_path / "test"
    (test / "Cat").mkdir(parents=True)
    for i in range(2):
        (test / f"Cat/{i}.jpg").symlink_to(tmp_path / f"elsewhere/Cat/{i}.jpg")
    (test / "Dog").symlink_to(tmp_path / "elsewhere/Dog", target_is_directory=True)
    (tmp_path / "test-link").symlink_to(test, target_is_directory=True)
    out = run_test(tmp_path / "test-link", tmp_path / "out")
    with h5py.File(out) as f:
        assert list(f["names"][:].astype(str)) == ["Cat/0.jpg", "Cat/1.jpg", "Dog/0.jpg",
                                                   "Dog/1.jpg"]
        assert list(f["labels"][:]) == [0, 0, 1, 1]
    for label, rgb in mean_rgb_by_label(out).items():
        np.testing.assert_allclose(rgb, imagegen.PALETTE[label][::-1], atol=12)


def test_main_sets_the_pixel_limit_for_its_worker_count(stage_dir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # Memory for one 40×30 (1,200-pixel) image a worker with one worker, half that with two.
    monkeypatch.setattr(limits, "USER_PIXELS", None)
    avail = int(1200 * limits.BYTES_PER_PIXEL / limits.MEMORY_SHARE)
    monkeypatch.setattr(limits, "available_memory", lambda: avail)
    with pytest.raises(SystemExit, match=r"test image\(s\) cannot be decoded.*1\.jpg \(claims "
                                         r"40×30 pixels, over the 600-pixel limit"):
        resize.main(main_args("test", "--workers", "2"))
    resize.main(main_args("test", "--workers", "1"))
    with h5py.File(stage_dir / "out/test.h5") as f:
        assert len(f["ids"]) == N_TEST


# A fresh process runs resize_train on one small and one 108 MP photo with one worker, and says
# how much memory it held before (imports done, resize kernels loaded) and at its peak.
PEAK_RSS = """
import json, re, sys
from pathlib import Path
from stages import resize
from stages.decode import decode_rgb
from stages.images import Source, list_train

def status(key):
    return int(re.search(key + r":\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1]) << 10

decode_rgb(Path(sys.argv[1], "cat.0.jpg").read_bytes(), 299)  # loads the resize kernels
try:
    Path("/proc/self/clear_refs").write_text("5")  # the peak so far: from here on
except OSError:
    pass
before = status("VmRSS")
source = Source(sys.argv[1])
skipped = resize.resize_split(source, list_train(source), sys.argv[2], 299, 1)
print(json.dumps({"before": before, "peak": status("VmHWM"), "skipped": skipped}))
"""
SLACK = 64 << 20  # the JPEG's bytes (~3 MB), HDF5 and thread buffers, allocator rounding


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's VmHWM")
def test_a_108_megapixel_photo_decodes_within_the_memory_bound(tmp_path: Path) -> None:
    w, h = 12_000, 9_000
    train = write(tmp_path / "train", {"cat.0.jpg": noisy_jpeg(400, 300),
                                       "cat.1.jpg": noisy_jpeg(40, 30, seed=1),
                                       "dog.0.jpg": imagegen.gradient_jpeg(w, h),
                                       "dog.1.jpg": noisy_jpeg(40, 30, seed=2)})
    # The limit the user would set to take it: exactly its pixels (whatever this machine's memory)
    env = os.environ | {limits.ENV: str(w * h)}
    p = subprocess.run([sys.executable, "-c", PEAK_RSS, str(train), str(tmp_path / "train.h5")],
                       cwd=REPO, env=env, capture_output=True, text=True, check=True)
    got = json.loads(p.stdout)
    assert got["skipped"] == []
    used = got["peak"] - got["before"]
    assert 3 * w * h < used < limits.BYTES_PER_PIXEL * w * h + SLACK, used / (w * h)
    with h5py.File(tmp_path / "train.h5") as f:  # the gradient, red rising across
        red = f["images"][2, ..., 0].astype(int)
        assert red[:, -10:].mean() > red[:, :10].mean() + 200


def test_more_classes_than_hdf5_can_name_stop_before_decoding(tmp_path: Path) -> None:
    """Thousands of class folders: the names outgrow HDF5's 64 KiB attribute. One line saying
    the limit, before any image is decoded, instead of "object header message is too large"."""
    many = [f"class_{i:05d}_{'x' * 200}" for i in range(h5io.MAX_CLASSES + 1)]
    with pytest.raises(h5io.UserError, match=r"4,091 classes: at most 4,090 class names fit"):
        h5io.check_classes(many)
    with h5io.create_h5(tmp_path / "f.h5") as f:  # the most that fit, long names and all
        h5io.set_classes(f, many[:-1])
    with h5py.File(tmp_path / "f.h5") as f:
        assert list(f.attrs["classes"]) == many[:-1]


def test_a_class_of_one_image_stops_before_any_extraction(tmp_path: Path) -> None:
    """One image cannot be on both sides of the validation split: said at resize, in one line,
    rather than after the extraction (the review's case ended in `KeyError: 'val_loss'`)."""
    imagegen.class_folders(tmp_path / "train", ("Cat", "Dog", "Owl"), 3)
    for extra in (1, 2):
        (tmp_path / f"train/Owl/{extra}.jpg").unlink()
    with pytest.raises(DataError, match=r"needs at least 2 images of every class.*: Owl \(1\)"):
        run_train(tmp_path / "train", tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.h5"))


def test_thousands_of_test_folders_are_no_classes(stage_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder per patient, by the thousand, on the side to score: more folders than could be
    classes are rows named by path, not an error."""
    monkeypatch.setattr(h5io, "MAX_CLASSES", 3)
    for i in range(4):
        imagegen.write(stage_dir / f"scans/patient{i}/a.jpg",
                       imagegen.image(np.random.default_rng(i), 0))
    params = yaml.safe_load((stage_dir / "params.yaml").read_text()) | {"test_data": "scans"}
    (stage_dir / "params.yaml").write_text(yaml.safe_dump(params))
    resize.main(main_args("test"))
    with h5py.File(stage_dir / "out/test.h5") as f:
        assert "labels" not in f and "classes" not in f.attrs
        assert list(f["names"].asstr()[:]) == [f"patient{i}/a.jpg" for i in range(4)]
    assert json.loads((stage_dir / "reports/resize/test.json").read_text())["images"] == 4


def set_params(stage_dir: Path, **values: str) -> None:
    params = yaml.safe_load((stage_dir / "params.yaml").read_text()) | values
    (stage_dir / "params.yaml").write_text(yaml.safe_dump(params))


def test_test_folders_misnamed_for_the_classes_stop_before_any_extraction(
        stage_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cats/`, `dogs/` (or `Cat/`, `Dog/`) for the classes cat, dog stopped only in predict,
    after both extractions; resize@test checks them against the training data's classes."""
    write(stage_dir / "test", {"cats/1.jpg": noisy_jpeg(), "dogs/2.jpg": noisy_jpeg()})
    set_params(stage_dir, test_data="test")
    decoded = []
    monkeypatch.setattr(resize, "decoded", lambda *a, **k: decoded.append(1) or iter(()))
    with pytest.raises(SystemExit, match=r"^resize test: test folder\(s\) cats, dogs are not "
                                         r"training classes \(cat, dog\); did you mean cats → "
                                         r"cat, dogs → dog\?"):
        resize.main(main_args("test"))
    assert not decoded


def test_without_the_training_data_the_models_classes_are_checked(stage_dir: Path) -> None:
    """A teammate who pulled only the model: its classes stand in for the training data's."""
    write(stage_dir / "test", {"Cat/1.jpg": noisy_jpeg(), "Dog/2.jpg": noisy_jpeg()})
    set_params(stage_dir, test_data="test", train_data="not-pulled")
    resize.main(main_args("test"))  # nothing to check against: predict will
    (stage_dir / "models").mkdir()
    with h5py.File(stage_dir / "models/model_2.h5", "w") as f:
        f.attrs["classes"] = ["cat", "dog"]
    with pytest.raises(SystemExit, match=r"Cat, Dog differ from the training classes cat, dog "
                                         r"only in case"):
        resize.main(main_args("test"))
