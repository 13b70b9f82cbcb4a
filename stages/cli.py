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

# DVC removes a stage's outputs before it runs the stage's command, so a stage that stops has
# already lost them; they come back from DVC's run-cache, without recomputing, once the inputs
# and params are those of an earlier run again.
RESTORE_HINT = ("DVC removed this stage's outputs before running it: once params.yaml is "
                "fixed, `dvc repro` (or `dvc exp run`) restores them from the run-cache in "
                "seconds if the stage ran with those params before")


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
        sys.exit(f"{stage}: {e}. {RESTORE_HINT}.")
    except UserError as e:
        sys.exit(f"{stage}: {e}")
    except KeyboardInterrupt:
        print(f"{stage}: interrupted; its outputs are written under temporary names and only "
              "renamed into place when complete, so nothing half-written is left. Run "
              "`dvc repro` to start it again.", file=sys.stderr)
        sys.exit(130)
