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
    raw = yaml.safe_load(committed_params())
    assert set(raw) == set(SPECS), "params.yaml must list every key of the contract"
    assert validate(raw) == DEFAULTS  # the committed file holds the contract's defaults


def test_contract_defaults() -> None:
    assert DEFAULTS == {
        "train_data": "data/raw/train", "test_data": "data/raw/test", "width": 299,
        "weights": "imagenet", "extract_batch_size": 32, "precision": "float32",
        "dropout": 0.5, "learning_rate": 0.001, "batch_size": 8, "epochs": 30,
        "val_split": 0.2, "seed": 2017, "clip": 0.005,
    }


def test_missing_keys_take_defaults() -> None:
    assert validate({"dropout": 0.3})["epochs"] == 30


def test_unknown_key_is_named_with_a_suggestion() -> None:
    with pytest.raises(ParamsError, match=r"unknown key 'dropuot'.*Did you mean 'dropout'"):
        validate({"dropuot": 0.3})


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("dropout", 1.0, r"\[0, 1\)"),
        ("width", 64, ">= 75"),
        ("epochs", 0, ">= 1"),
        ("epochs", 2.5, "integer"),
        ("epochs", True, "integer"),
        ("precision", "float16", "mixed_float16"),
        ("val_split", 0, r"\(0, 1\)"),
        ("clip", 0.5, r"\[0, 0.5\)"),
        ("learning_rate", "fast", "> 0"),
        ("train_data", "", "path"),
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
