"""The CLAIM 2024, TRIPOD+AI and STARD-AI items the report answers, and where each is answered."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stages.html_parts import esc, table

if TYPE_CHECKING:
    from stages.run_record import Run

# The reporting guidelines' items, by topic (not by number): (guideline, item, the section
# that answers it, or None: the author writes it).
CHECKLIST: tuple[tuple[str, str, str | None], ...] = (
    ("CLAIM 2024", "Intended use and clinical role of the model", None),
    ("CLAIM 2024", "Data sources, setting and dates of collection", None),
    ("CLAIM 2024", "Eligibility: inclusion and exclusion of patients", None),
    ("CLAIM 2024", "Data preprocessing (image size, excluded files)", "run-params"),
    ("CLAIM 2024", "Reference standard: definition, annotators, their qualifications", None),
    ("CLAIM 2024", "Data partitions and their patient-level separation", "data"),
    ("CLAIM 2024", "Model: architecture, initialisation (transfer learning)", "run-model"),
    ("CLAIM 2024", "Training: hyperparameters, model selection", "run-params"),
    ("CLAIM 2024", "Performance metrics with their statistical uncertainty", "performance"),
    ("CLAIM 2024", "Failure analysis and saliency", "looked"),
    ("CLAIM 2024", "Software, versions and code availability", "run-env"),
    ("CLAIM 2024", "Ethics approval, consent, funding", None),
    ("TRIPOD+AI", "Outcome (target condition) and how it was assessed", None),
    ("TRIPOD+AI", "Sample size: images and patients per class and split", "data"),
    ("TRIPOD+AI", "Missing data: excluded images with reasons", "data-skipped"),
    ("TRIPOD+AI", "Class imbalance handling", "run-params"),
    ("TRIPOD+AI", "Discrimination (AUC) and calibration", "performance"),
    ("TRIPOD+AI", "Recalibration (temperature) and threshold", "decision"),
    ("TRIPOD+AI", "Fairness: performance in subgroups", None),
    ("TRIPOD+AI", "Patient and public involvement", None),
    ("STARD-AI", "Index test threshold: prespecified or chosen on data", "decision"),
    ("STARD-AI", "Participant flow: images excluded and why", "data-skipped"),
    ("STARD-AI", "Test set independent of training (no shared patients)", "data-shared"),
    ("STARD-AI", "Cross tabulation of index test against reference standard",
     "perf-test-confusion"),
    ("STARD-AI", "Diagnostic accuracy estimates with 95 % intervals", "performance"),
    ("STARD-AI", "Recruitment, setting and clinical pathway", None),
)


# Each section a checklist row links to, as the row names it.
TITLES = {"run-params": "1. every param", "run-model": "1. the model",
          "run-env": "1. software and machine", "data": "2. Data",
          "data-skipped": "2. files skipped", "data-shared": "2. patients in both sets",
          "decision": "3. The decision", "performance": "4. Performance",
          "perf-test-confusion": "4. test confusion matrix", "perf-test": "4. test",
          "looked": "5. mistakes"}


def section_checklist(run: Run) -> str:
    ids = {"perf-test-confusion": "perf-test-confusion" if run.test else "perf-test"}
    rows = []
    for guideline, item, where in CHECKLIST:
        if where is None:
            cell = "<span class=author>the author writes it</span>"
        else:
            target = ids.get(where, where)
            cell = f'answered: <a href="#{target}">§ {esc(TITLES.get(target, target))}</a>'
        rows.append([esc(guideline), esc(item), cell])
    return ('<section id="checklist"><h2>6. Reporting checklist</h2>'
            "<p>Items of CLAIM 2024, TRIPOD+AI (2024) and STARD-AI (2025), named by topic: "
            "where this page answers them, and where the author must.</p>"
            + table(["guideline", "item", "where"], rows) + "</section>")
