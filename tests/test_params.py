"""params.yaml validation: defaults, and messages that name the key, the value and the fix."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from stages.params import DEFAULTS, SPECS, ParamsError, load_params, validate

REPO = Path(__file__).resolve().parents[1]


def committed_params() -> str:
    """params.yaml as committed: the workspace's may hold the user's last `dvc exp run -S`."""
    p = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=REPO, capture_output=True,
                       text=True)
    return p.stdout if p.returncode == 0 else (REPO / "params.yaml").read_text()


def test_repo_params_file_is_valid_and_complete() -> None:
    # Valid, not equal to the defaults: a user's committed baseline holds their own values.
    raw = yaml.safe_load(committed_params())
    assert set(raw) == set(SPECS), "params.yaml must list every key of the contract"
    validate(raw)


def test_contract_defaults() -> None:
    assert DEFAULTS == {
        "train_data": "data/raw/train", "test_data": "data/raw/test", "width": 299,
        "weights": "imagenet", "extract_batch_size": 32, "precision": "float32",
        "engine": "tensorflow",
        "fuse": ["inception_v3", "xception"],
        "dropout": 0.5, "learning_rate": 0.001, "batch_size": 8, "epochs": 30,
        "val_split": 0.2, "folds": 0, "seed": 2017, "group_pattern": "", "class_weight": "none",
        "threshold": 0.5, "calibrate": "none", "clip": 0.005,
    }


@pytest.mark.parametrize("value", [0.5, 0.01, 0.99, "youden", "sensitivity:0.95",
                                   "specificity:1", "sensitivity:.9"])
def test_threshold_forms_are_valid(value: object) -> None:
    assert validate({"threshold": value})["threshold"] == value


@pytest.mark.parametrize("value", [0, 1, 1.5, "Youden", "sensitivity:0", "sensitivity:1.2",
                                   "recall:0.9", "sensitivity", True])
def test_bad_thresholds_name_the_forms(value: object) -> None:
    with pytest.raises(ParamsError, match=r"'threshold' is .*; it must be a number in \(0, 1\), "
                                          r"'youden', or 'sensitivity:X' / 'specificity:X'"):
        validate({"threshold": value})


def test_calibrate_names_its_choices() -> None:
    with pytest.raises(ParamsError, match=r"'calibrate' is 'temprature'.*did you mean "
                                          r"'temperature'"):
        validate({"calibrate": "temprature"})


def test_missing_keys_take_defaults() -> None:
    assert validate({"dropout": 0.3})["epochs"] == 30


def test_unknown_key_is_named_with_a_suggestion() -> None:
    with pytest.raises(ParamsError, match=r"unknown key 'dropuot'.*Did you mean 'dropout'\? "
                                          r"Delete its line from params\.yaml \(or `git "
                                          r"checkout params\.yaml`"):
        validate({"dropuot": 0.3})


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("dropout", 1.0, r"\[0, 1\)"),
        ("width", 64, "from 75"),
        ("epochs", 0, "from 1"),
        ("epochs", 2.5, "integer"),
        ("epochs", True, "integer"),
        ("precision", "float16", "mixed_float16"),
        ("val_split", 0, r"\(0, 1\)"),
        ("folds", 1, r"0 \(one validation split by val_split\) or an integer from 2 to 20"),
        ("folds", 21, "from 2 to 20"),
        ("folds", "5", "from 2 to 20"),
        ("clip", 0.5, r"\[0, 0.5\)"),
        ("learning_rate", "fast", r"\(0, 10\]"),
        ("train_data", "", "path"),
        ("class_weight", "balance", "did you mean 'balanced'"),
        ("group_pattern", "(person", "regular expression"),
        ("fuse", [], "list of different networks"),
        ("fuse", ["xception", "xception"], "list of different networks"),
        ("fuse", ["xceptoin"], "'xceptoin': did you mean 'xception'"),
        ("fuse", "xception", "list"),
    ],
)
def test_bad_values_name_key_value_and_range(key: str, value: object, allowed: str) -> None:
    with pytest.raises(ParamsError) as e:
        validate({key: value})
    msg = str(e.value)
    assert f"'{key}' is {value!r}" in msg
    assert re.search(allowed, msg), msg


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ParamsError) as e:
        validate({"dropout": 2, "epoch": 3})
    assert "'dropout'" in str(e.value) and "'epoch'" in str(e.value)


def test_load_params_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("width: 10\n")
    with pytest.raises(ParamsError, match=r"params.yaml: 'width' is 10"):
        load_params(tmp_path / "params.yaml")
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")


@pytest.mark.parametrize(("text", "key", "value"), [
    ("learning_rate: 3e-4\n", "learning_rate", 0.0003),  # YAML 1.1 (PyYAML) reads a string
    ("learning_rate: 1E-3\n", "learning_rate", 0.001),
    ("dropout: 0.3\n", "dropout", 0.3),
    ("epochs: 1_000\n", "epochs", 1000),
])
def test_params_are_read_as_dvc_reads_them(tmp_path: Path, text: str, key: str,
                                           value: object) -> None:
    from dvc.utils.serialize import parse_yaml

    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert load_params(path)[key] == parse_yaml(text, str(path))[key] == value


@pytest.mark.parametrize(("text", "key"), [
    ("seed: 4294967296\n", "seed"),  # NumPy and TensorFlow seeds are 32 bits
    ("seed: -1\n", "seed"),
    ("learning_rate: .inf\n", "learning_rate"),
    ("learning_rate: .nan\n", "learning_rate"),
    ("learning_rate: 100\n", "learning_rate"),
    ("dropout: .nan\n", "dropout"),
    ("clip: .nan\n", "clip"),
    ("width: 100000\n", "width"),
    ("epochs: 10000000\n", "epochs"),
    ("batch_size: 0\n", "batch_size"),
    ("seed: " + "9" * 400 + "\n", "seed"),  # too big for math.isfinite: still one line
    ("epochs: " + "9" * 400 + "\n", "epochs"),
])
def test_every_value_is_bounded_by_what_the_code_takes(tmp_path: Path, text: str,
                                                       key: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match=rf"'{key}' is .*; it must be"):
        load_params(path)


def test_a_misspelt_choice_gets_a_suggestion() -> None:
    with pytest.raises(ParamsError, match=r"'weights' is 'imagnet'.*did you mean 'imagenet'"):
        validate({"weights": "imagnet"})
    with pytest.raises(ParamsError, match=r"did you mean 'mixed_bfloat16'"):
        validate({"precision": "mixed_bf16"})


def test_a_file_that_is_not_yaml_is_named(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("dropout: [0.3\n")
    with pytest.raises(ParamsError, match=r"params.yaml: not valid YAML"):
        load_params(path)


def test_a_stage_gets_only_the_params_it_declares(tmp_path: Path) -> None:
    """What a stage may read is what dvc.yaml lists for it (tests/test_dvc_yaml.py): reading
    another key is a bug, which must show rather than go unnoticed by DVC."""
    path = tmp_path / "params.yaml"
    path.write_text("dropout: 0.3\nwidth: 160\n")
    params = load_params(path, keys=("dropout",))
    assert params == {"dropout": 0.3}
    with pytest.raises(KeyError):
        params["width"]
    path.write_text("dropout: 0.3\ndropuot: 0.3\n")  # a typo elsewhere still stops it
    with pytest.raises(ParamsError, match="unknown key 'dropuot'"):
        load_params(path, keys=("dropout",))
