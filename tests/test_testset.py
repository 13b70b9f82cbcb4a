"""Reading a test set against the training classes (stages/testset.py): what is labelled, what
is scored by name, and what stops, naming the folders and the classes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_images import write

from stages.images import Source, list_test
from stages.testset import TestSetError, near_misses, read

CATS = ["cat", "dog"]


def labels_of(names: list[str], classes: list[str]) -> list[int] | None:
    r = read(names, classes)
    return None if r.labels is None else r.labels.tolist()


def test_folders_named_like_classes_but_not_exactly_stop_with_did_you_mean() -> None:
    """`cats/`, `dogs/` for the classes cat, dog were scored as an unlabelled set: no
    true_class, no test scores, and only "(named by file)" to say so."""
    with pytest.raises(TestSetError, match=r"test folder\(s\) cats, dogs are not training classes "
                                           r"\(cat, dog\); did you mean cats → cat, dogs → dog\?"):
        read(["cats/1.jpg", "dogs/2.jpg"], CATS)


def test_a_near_miss_beside_a_class_is_named_with_its_class() -> None:
    with pytest.raises(TestSetError, match=r"dogs are not training classes \(cat, dog\), while "
                                           r"cat are; did you mean dogs → dog\?"):
        read(["cat/1.jpg", "dogs/2.jpg"], CATS)


@pytest.mark.parametrize(("folders", "expected"), [
    (["cats", "Dog", "DOGS", "Malignent", "benign_new", "patient7", "images"],
     {"cats": "cat", "Dog": "dog", "DOGS": "dog", "Malignent": "Malignant"}),
])
def test_near_misses(folders: list[str], expected: dict[str, str]) -> None:
    assert near_misses(folders, ["Benign", "Malignant", "cat", "dog", "image_a"]) == expected


def test_folders_of_other_names_stop_naming_folders_and_classes() -> None:
    with pytest.raises(TestSetError, match=r"test folder\(s\) photos, scans are not training "
                                           r"classes \(cat, dog\)\. .*with a digit"):
        read(["scans/1.jpg", "photos/2.jpg"], CATS)


@pytest.mark.parametrize("names", [
    ["patient1/a.dcm", "patient2/b.dcm", "P0003/c.dcm"],   # one folder per patient
    ["2024-05-01/a.jpg", "2024-05-02/b.jpg"],               # dates
    ["x/photo.jpg", "IMG_0001.jpg", "scan 2.png"],          # loose images beside a folder
])
def test_folders_that_clearly_are_not_classes_are_scored_by_name(names: list[str]) -> None:
    r = read(names, ["NORMAL", "PNEUMONIA"])
    assert r.labels is None and r.ids is None and list(r.names) == names


def test_a_one_class_set_in_patient_folders_keeps_its_class() -> None:
    """`Malignant/patient1/IM1.png`, … lost `Malignant/` as a wrapper: nothing was scored."""
    names = ["Malignant/patient1/IM1.png", "Malignant/patient2/IM1.png"]
    r = read(names, ["Benign", "Malignant"])
    assert list(r.names) == names and r.labels.tolist() == [1, 1]
    # one patient only: still the class, not two wrappers
    assert labels_of(["Malignant/patient1/IM1.png", "Malignant/patient1/IM2.png"],
                     ["Benign", "Malignant"]) == [1, 1]


def test_a_one_class_set_of_numbered_files_is_labelled_not_kaggle_ids() -> None:
    r = read(["dog/1.jpg", "dog/2.jpg"], CATS)
    assert r.ids is None and r.labels.tolist() == [1, 1]
    assert list(r.names) == ["dog/1.jpg", "dog/2.jpg"]


def test_lone_folders_that_are_not_classes_are_wrappers() -> None:
    r = read(["test/cat/1.jpg", "test/dog/2.jpg"], CATS)
    assert list(r.names) == ["cat/1.jpg", "dog/2.jpg"] and r.labels.tolist() == [0, 1]
    r = read(["test/10.jpg", "test/2.jpg"], CATS)  # Kaggle's test.zip, unzipped into a folder
    assert r.ids.tolist() == [10, 2] and r.names is None  # the submission: rows are ids
    assert list(read(["new/scans/a.png", "new/scans/b.png"], CATS).names) == ["a.png", "b.png"]


def test_a_wrapper_named_like_a_class_around_classes_is_asked_about() -> None:
    """`cat/cat/1.jpg`, `cat/dog/2.jpg`: the class cat, or a wrapper? Either reading could be
    silently wrong."""
    with pytest.raises(TestSetError, match=r"test folder cat is a training class and holds only "
                                           r"folders named like training classes \(cat, dog\)"):
        read(["cat/cat/1.jpg", "cat/dog/2.jpg"], CATS)
    assert labels_of(["cat/cat/1.jpg", "cat/cat/2.jpg"], CATS) == [0, 0]  # the same, twice


def test_folders_differing_only_in_case_are_named() -> None:
    with pytest.raises(TestSetError, match=r"Cat, Dog differ from the training classes cat, dog "
                                           r"only in case"):
        read(["Cat/1.jpg", "Dog/2.jpg"], CATS)
    with pytest.raises(TestSetError, match=r"Cat differ from the training classes cat only"):
        read(["Cat/1.jpg", "Cat/2.jpg"], CATS)  # a lone one too: no wrapper


def test_a_labelled_set_maps_to_the_training_classes() -> None:
    r = read(["Dog/1.jpg", "Dog/2.jpg"], ["Bird", "Cat", "Dog"])
    assert r.labels.tolist() == [2, 2] and isinstance(r.labels, np.ndarray)


def test_a_zip_made_the_usual_way_names_rows_as_its_folder(tmp_path: Path) -> None:
    """`zip -r batch2.zip batch2` named rows `batch2/IMG_0001.jpg` (and reran the extraction),
    where the folder gave `IMG_0001.jpg`."""
    write(tmp_path / "batch2", {"IMG_0001.jpg": b"", "IMG_0002.jpg": b""})
    subprocess.run(["zip", "-qr", "batch2.zip", "batch2"], cwd=tmp_path, check=True)
    folder, zipped = list_test(Source(tmp_path / "batch2")), list_test(
        Source(tmp_path / "batch2.zip"))
    assert zipped.names == folder.names == ["IMG_0001.jpg", "IMG_0002.jpg"]
    assert zipped.files == ["batch2/IMG_0001.jpg", "batch2/IMG_0002.jpg"]  # as stored


def test_the_issue_layout_listed_then_read_keeps_malignant(tmp_path: Path) -> None:
    """As resize@test lists it and predict reads it: `test/Malignant/patient1/IM1.png`, …"""
    write(tmp_path / "test", {"Malignant/patient1/IM1.png": b"", "Malignant/patient2/IM1.png": b""})
    listing = list_test(Source(tmp_path / "test"))
    r = read(listing.names, ["Benign", "Malignant"])
    assert list(r.names) == ["Malignant/patient1/IM1.png", "Malignant/patient2/IM1.png"]
    assert r.labels.tolist() == [1, 1]


def test_a_zip_of_non_ascii_names_made_by_info_zip_names_rows_as_its_folder(
        tmp_path: Path) -> None:
    """Info-ZIP's `zip` stores `café.jpg` as UTF-8 bytes without the UTF-8 flag: zipfile read
    it as cp437, `caf├⌐.jpg`, and the zip's rows (and resized file) differed from the folder's."""
    write(tmp_path / "batch2", {"café.jpg": b"", "IMG_0001.jpg": b""})
    subprocess.run(["zip", "-qr", "batch2.zip", "batch2"], cwd=tmp_path, check=True,
                   env={"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"})
    zipped = Source(tmp_path / "batch2.zip")
    assert list_test(zipped).names == list_test(Source(tmp_path / "batch2")).names == [
        "café.jpg", "IMG_0001.jpg"]
    assert zipped.read("batch2/café.jpg") == b""  # read by the name it is listed under
