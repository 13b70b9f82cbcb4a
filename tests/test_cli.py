"""How a stage ends and what it prints: one line for what the user did (a bad param, missing
weights offline, Ctrl-C), a traceback for a bug, and none of TensorFlow's start-up noise."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from conftest import ENV, REPO

from stages import cli, quiet
from stages.backbones import BACKBONES, WeightsError, build


def fail_with(exc: BaseException) -> None:
    raise exc


def test_a_user_error_is_one_line() -> None:
    with pytest.raises(SystemExit) as e:
        cli.run("resize", lambda: fail_with(cli.MissingInput("data/raw/train: not found. Fix")))
    assert e.value.code == "resize: data/raw/train: not found. Fix"


def test_a_bad_param_says_what_became_of_the_outputs() -> None:
    """train_head's and predict's outputs are kept (persist); resize's, the extractors' and
    concat's come back with `dvc checkout`; outside the pipeline nothing is said of them."""
    said = {}
    for stage in ("predict", "train_head", "resize train", "extract xception", "classify"):
        with pytest.raises(SystemExit) as e:
            cli.run(stage, lambda: fail_with(cli.ParamsError("params.yaml: 'clip' is 0.7")))
        said[stage] = str(e.value.code)
        assert said[stage].startswith(f"{stage}: params.yaml: 'clip' is 0.7")
        assert "\n" not in said[stage]
    assert "outputs are untouched" in said["predict"] and "untouched" in said["train_head"]
    assert "`dvc checkout`" in said["resize train"] and "`dvc checkout`" in said["extract xception"]
    assert said["classify"] == "classify: params.yaml: 'clip' is 0.7"


def test_a_bug_keeps_its_traceback() -> None:
    with pytest.raises(ZeroDivisionError):
        cli.run("train_head", lambda: fail_with(ZeroDivisionError("ours")))
    with pytest.raises(ValueError, match="inside TensorFlow"):  # not taken for a user's error
        cli.run("train_head", lambda: fail_with(ValueError("inside TensorFlow")))


def test_ctrl_c_is_one_line_and_exit_code_130() -> None:
    code = ("from stages import cli; import time; "
            "cli.run('extract xception', lambda: print('ready', flush=True) or time.sleep(60))")
    # pytest-xdist's workers ignore SIGINT, and a child inherits that: give it the default back,
    # as a shell does. "ready": the handler is in place (a loaded CI machine starts slowly).
    p = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert p.stdout is not None and p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 130
    assert err.count("\n") == 1 and err.startswith("extract xception: interrupted;")
    assert "Traceback" not in err


def test_imagenet_weights_offline_name_the_local_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    from keras.src.utils import file_utils

    def offline(*_: object, **__: object) -> None:
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- "
                        "[Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(WeightsError) as e:
        build(BACKBONES["xception"], 75, "imagenet", 0)
    msg = str(e.value)
    assert "could not download xception's ImageNet weights" in msg
    assert "Name or service not known" in msg and "weights: keras_weights" in msg


def test_tensorflow_starts_without_noise() -> None:
    code = ("from stages import quiet; tf = quiet.tensorflow(); import keras; "
            "keras.layers.Dense(2)(tf.ones((1, 3))); print('ok')")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True,
                       text=True)
    assert p.returncode == 0 and p.stdout == "ok\n", p.stderr
    assert not [line for line in p.stderr.splitlines() if quiet.NOISE.search(line)], p.stderr
    assert "absl::InitializeLog" not in p.stderr and "cuInit" not in p.stderr


def test_other_start_up_lines_still_reach_the_user() -> None:
    with quiet._stderr_caught() as lines:  # what C++ writes: straight to file descriptor 2
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on. You may see\n")
        os.write(2, b"something that matters\n")
    assert [line for line in lines if not quiet.NOISE.search(line)] == ["something that matters"]
