"""Check that the main job's report is complete: every experiment has its section, the
pattern methods have their rows, nothing is marked "not run" (a missing dependency) and no
summary, verdict or figure failed.

The main job already exits non-zero when a trial raises; this catches what would still exit 0
with a report that silently lacks part of the paper's comparison.
"""

from __future__ import annotations

import sys
from pathlib import Path

EXPERIMENT_TITLES = ("Figure 2", "Figure 1", "MNIST", "sensing", "Convolutional MNIST",
                     "Table 1")
BAD_MARKERS = ("not run:", "failed:", "(figures failed", "cannot summarise")
METHOD_CELLS = ("| pattern |", "| pattern (MAP prior) |", "| gd (MAP prior) |",
                "| pgd-pattern |")
"""Table cells of the pattern methods (issue 13): noise's and the noise-free MNIST tasks'
'pattern', MNIST's MAP-prior rows, sensing's PGD with the pattern projection."""


def problems(report: str) -> list[str]:
    found = [f"no section mentions {title!r}" for title in EXPERIMENT_TITLES
             if title.lower() not in report.lower()]
    found += [f"no table row has the method cell {cell!r}" for cell in METHOD_CELLS
              if cell not in report]
    for number, line in enumerate(report.splitlines(), start=1):
        found += [f"line {number}: {line.strip()}" for marker in BAD_MARKERS if marker in line]
    return found


if __name__ == "__main__":
    path = Path(sys.argv[1])
    if not path.is_file():
        raise SystemExit(f"check_report: {path} was not written")
    bad = problems(path.read_text(encoding="utf-8"))
    if bad:
        raise SystemExit("check_report: the report is incomplete:\n  " + "\n  ".join(bad))
    print(f"check_report: {path} is complete")
