"""How a stage ends: one line for what the user can fix, a traceback for a bug of ours (and
`say`, what it is doing meanwhile).

Every stage's `main()` runs its work through `run`. A `UserError` (a bad param, bad data, a
missing input or weights file) becomes one line that names the problem and the fix, exit code
1; Ctrl-C becomes one line too, exit code 130; anything else keeps Python's traceback, because
then the bug is ours (or TensorFlow's) and the traceback is what finds it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

# What became of the last run's outputs when a stage stops on the user's mistake. DVC removes a
# stage's outputs before it runs the command, unless they are `persist` (dvc.yaml): the stages
# whose outputs include files git keeps (metrics.json, the history picture, predict.json), and
# that an experiment's bad param reaches, keep them; the others' outputs are all in DVC's cache,
# which `dvc checkout` restores from, as dvc.lock records the last run (tests/test_pipeline.py).
KEPT = ("train_head", "predict", "pick_weights")
REMOVED = ("resize", "extract", "concat")
KEPT_HINT = ("The last run's outputs are untouched (this stage's outputs are kept until it "
             "succeeds); params.yaml still holds the value: fix it there")
REMOVED_HINT = ("DVC removed this stage's outputs before running it: `dvc checkout` puts the "
                "last run's back, without recomputing; params.yaml still holds the value: fix "
                "it there")


def hint(stage: str) -> str:
    """What a stage that stopped on a bad param says of its outputs ('' outside the pipeline)."""
    name = stage.split()[0]
    return KEPT_HINT if name in KEPT else REMOVED_HINT if name in REMOVED else ""


class UserError(Exception):
    """Something the user can fix; the message names it and says how."""


class ParamsError(UserError, ValueError):
    """A value in params.yaml is unknown, of the wrong type or out of range."""


class MissingInput(UserError, FileNotFoundError):
    """An input file of the stage is missing or is not what the stage expects."""


def some(items: Sequence[str], n: int = 20) -> str:
    """The first `n` of `items` for a message, and how many more there are."""
    return ", ".join(items[:n]) + (f" … and {len(items) - n} more" if len(items) > n else "")


def say(stage: str, what: str) -> None:
    """One line on stderr, at once: what a stage is doing through a wait that would otherwise
    pass in silence (TensorFlow starting, a network being built)."""
    print(f"{stage}: {what}", file=sys.stderr, flush=True)


def run(stage: str, work: Callable[[], None]) -> None:
    """Run a stage's work; end with one line for a UserError or Ctrl-C."""
    try:
        work()
    except ParamsError as e:
        sys.exit(f"{stage}: {e}. {hint(stage)}." if hint(stage) else f"{stage}: {e}")
    except UserError as e:
        sys.exit(f"{stage}: {e}")
    except KeyboardInterrupt:
        print(f"{stage}: interrupted; its outputs are written under temporary names and only "
              "renamed into place when complete, so nothing half-written is left. Run "
              "`dvc repro` to start it again.", file=sys.stderr)
        sys.exit(130)
