"""The docs hold together: every relative link in the repository's Markdown files reaches a file
that exists and, with `#anchor`, a heading of that file (as GitHub makes anchors of headings);
and every `dvc exp run … -S …` command they show is one DVC takes, as a user would paste it."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from stages.params import load_params

ROOT = Path(__file__).resolve().parents[1]


def markdown_files() -> list[Path]:
    """Every Markdown file of the project: what git tracks or would track (not .pytest_cache's
    README, nor a user's ignored data)."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                              "--", "*.md"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (a source archive)
        return sorted(p for p in ROOT.rglob("*.md")
                      if not any(part.startswith(".") for part in p.relative_to(ROOT).parts))
    return sorted(ROOT / p for p in out if (ROOT / p).is_file())


PAGES = markdown_files()
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_every_markdown_file_is_checked() -> None:
    rel = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "data/raw/README.md", "docs/data.md"} <= rel


def anchors(page: Path) -> set[str]:
    """GitHub's anchors: headings lowercased, punctuation but `-` and `_` dropped, spaces to
    `-`."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    heads = re.findall(r"^#+ (.+)$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_reaches_its_file_and_heading(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: {target}: no such file"
        if anchor:
            assert anchor in anchors(dest), f"{page.name}: {target}: no such heading"


# --- the `dvc exp run` commands the docs show ---------------------------------------------------


def exp_run_commands() -> list[tuple[str, str]]:
    """(page, command) for every `dvc exp run` with `-S` in a page: whole lines of code blocks
    (a trailing `# comment` dropped, as the shell drops it) and inline code spans."""
    found = []
    for page in PAGES:
        text = page.read_text()
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
        lines = [ln.strip() for b in blocks for ln in b.replace("\\\n", " ").splitlines()]
        inline = re.findall(r"`(dvc exp run[^`]*)`", re.sub(r"```.*?```", "", text, flags=re.S))
        for cmd in [ln for ln in lines if ln.startswith("dvc exp run")] + inline:
            if " -S " in cmd:
                found.append((page.relative_to(ROOT).as_posix(), cmd))
    return found


COMMANDS = exp_run_commands()


def test_the_docs_show_the_commands_users_paste() -> None:
    pages = {p for p, _ in COMMANDS}
    assert {"README.md", "docs/medical.md", "docs/experiments.md", "docs/networks.md"} <= pages
    assert any("group_pattern" in c for _, c in COMMANDS)


@pytest.mark.parametrize(("page", "command"), COMMANDS, ids=[f"{p}:{c}" for p, c in COMMANDS])
def test_dvc_takes_every_exp_run_command_of_the_docs(page: str, command: str,
                                                     tmp_path: Path) -> None:
    """Split as the shell splits it, parsed by DVC's own command line, each `-S` applied to the
    project's params.yaml by DVC's own Hydra code (one params file per point of a queued grid),
    and the result valid for the stages; a quoted value arrives as written. `-S
    group_pattern='^(person\\d+|…)'` stopped in DVC's parser and ran nothing."""
    from dvc.cli import parse_args
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import apply_overrides, get_hydra_sweeps, to_hydra_overrides

    argv = shlex.split(command, comments=True)
    args = parse_args(argv[1:])
    overrides = to_path_overrides(args.set_param)
    assert set(overrides) == {"params.yaml"}, f"{page}: {command}"
    sweep = any(o.is_sweep_override() for o in to_hydra_overrides(overrides["params.yaml"]))
    assert args.queue or not sweep, f"{page}: a grid needs --queue: {command}"
    for i, point in enumerate(get_hydra_sweeps(overrides) if sweep else [overrides]):
        params = tmp_path / f"{i}.yaml"
        shutil.copy(ROOT / "params.yaml", params)
        apply_overrides(params, point["params.yaml"])  # raises as `dvc exp run` would
        applied = load_params(params)
        for override in point["params.yaml"]:
            key, _, value = override.partition("=")
            if len(value) > 1 and value[0] == value[-1] == "'":  # Hydra's quoted string
                assert applied[key.lstrip("+")] == value[1:-1], f"{page}: {command}"
    assert yaml.safe_load((ROOT / "params.yaml").read_text())  # the project's own untouched


def clinical_exp_show() -> list[str]:
    """docs/medical.md's clinical `dvc exp show`, split as the shell splits it."""
    text = (ROOT / "docs/medical.md").read_text()
    return shlex.split(next(ln.strip() for ln in text.splitlines()
                            if ln.strip().startswith("dvc exp show") and "sensitivity" in ln))


CLINICAL = [f"{side}_{m}" for side in ("val", "test") for m in ("auc", "sensitivity",
                                                                  "specificity")]


def test_the_clinical_exp_show_of_medical_md_shows_validation_and_test_scores(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/medical.md tells the reader to compare validation with the test set: its `dvc exp
    show` (run through DVC's own column filter and table, over the columns the stages'
    metrics make, issue 32's included) must show both sides' clinical scores and the grid's
    params, and fit a 160-column terminal: it hid the test scores and both sensitivities, then
    printed 250–290 columns (321 with issue 32's `val_*_fold_sd`)."""
    from dvc.cli import parse_args
    from dvc.commands.experiments.show import show_experiments
    from dvc.compare import TabularData
    from dvc.ui import ui
    from rich.console import Console

    args = parse_args(clinical_exp_show()[1:])
    scores = ("auc", "balanced_accuracy", "sensitivity", "specificity")
    clinical = [f"{side}_{m}" for side in ("val", "test") for m in scores]
    metrics = ["val_loss", "val_accuracy", "best_epoch", "best_epoch_val_loss", "n_train",
               "n_val", "n_groups_train", "n_groups_val", "n_test", "test_loss",
               "test_accuracy", *clinical, "reports/resize/train.json:images", "folders",
               # metrics.json's `threshold`, named by its file beside the param of that name
               "metrics.json:threshold", "threshold_low", "threshold_high", "temperature",
               "val_ece", "test_ece", *(f"{m}_{end}" for m in clinical for end in ("low", "high")),
               *(f"val_{m}_fold_sd" for m in ("loss", "accuracy", *scores))]
    params = ["class_weight", "seed", "dropout", "threshold", "folds"]
    deps = ["data/features/train/fused.h5"]
    meta = ["Experiment", "rev", "typ", "Created", "parent", "State", "Executor"]
    names = ["gemmy-mold", "store-shoe", "cross-mash", "curly-dabs", "amber-cyst", "shoal-bice"]
    for width in (1000, 160):  # the table's own width, and as a 160-column terminal shows it
        td = TabularData([*meta, *metrics, *params, *deps], fill_value="-")
        td.append(["workspace", "workspace", "baseline", "", "", "", "", *(
            "0.0068027" for _ in metrics), "none", "2017", "0.5", "youden", "0", "md5"])
        for i, name in enumerate(names):  # a grid's experiments: every value differs
            td.append([name, f"{i:07x}", "branch_commit", "04:01 PM", "", "Success", "workspace",
                       *(str(0.00123456 + 0.1 * i + j) for j in range(len(metrics))),
                       ("none", "balanced")[i % 2], str(i), "0.5", "youden", "0", f"md5{i}"])
        console = Console(width=width, color_system=None)
        monkeypatch.setattr(ui, "rich_console", console)
        monkeypatch.setattr(ui, "_enabled", True)  # as `dvc` enables it
        show_experiments(td, {"metrics": metrics, "params": params, "deps": deps},
                         keep=args.keep, drop=args.drop, pager=False,
                         only_changed=args.only_changed)
        table = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
        assert set(table[1].split()) == {"Experiment", *CLINICAL, "class_weight", "seed"}, table
        assert max(map(len, table)) <= 160 and "…" not in "".join(table), "\n".join(table)
        assert "[shoal-bice]" in table[-2]


@pytest.mark.parametrize("page", ["README.md", "docs/experiments.md"])
def test_where_plots_are_introduced_the_offline_pngs_are_named(page: str) -> None:
    """`dvc plots show`'s page loads Vega from the internet (tests/test_tracking.py checks
    that it still does): offline, only the PNGs the stages write show, and the docs say so."""
    text = (ROOT / page).read_text()
    para = next(p for p in re.split(r"\n\s*\n|\n- ", text) if "`dvc plots show`" in p)
    assert "internet" in para and "`reports/history.png`" in para, para


SECTION_REF = re.compile(r"((?:docs/)?[\w.-]+\.md),? (?:section )?['\"]([^'\"\n]{3,60})['\"]")


@pytest.mark.parametrize("source", [*PAGES, *sorted((ROOT / "stages").glob("*.py"))],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_section_named_in_prose_or_messages_exists(source: Path) -> None:
    """`README.md, 'Score new images'` in a stage's message, or in a page's prose, names a
    heading of that file (data/raw/README.md named a section "Data" that did not exist)."""
    for file, heading in SECTION_REF.findall(source.read_text()):
        page = ROOT / file
        assert page.exists(), f"{source.name}: {file}: no such file"
        heads = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", page.read_text(), flags=re.S),
                           re.M)
        assert any(h.strip().startswith(heading) for h in heads), (
            f"{source.name}: {file} has no section {heading!r}")


def test_the_own_data_quickstart_says_offline_weights_before_its_commands() -> None:
    """A user without internet met the download error first: the offline way came after the
    commands. It is said before the first shell block of the section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart: your own class folders", 1)[1].split("\n## ", 1)[0]
    before = section.split("```bash", 1)[0]
    assert "weights: keras_weights" in before and "docs/data.md#weights" in before
