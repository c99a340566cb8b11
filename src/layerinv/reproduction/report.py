"""The report of a results file: `DIR/REPORT.md`, `DIR/report.html` and `DIR/figures/*.png`.

`render(db, out)` reads every trial of a results file (nothing is computed again) and writes,
for each experiment with rows, in the registry's order: what was run, the paper's numbers, our
summary table, the figures and one sentence comparing the two, generated from the measured
rows by the experiment's `verdict`; then the machine and the package versions. `report.html`
holds the same content in one self-contained file (figures embedded as base64 PNG).

Helpers used by the experiments: `markdown_table`, `pyplot` (matplotlib on the Agg backend)
and `save_figure`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import html
import importlib.metadata
import os
import platform
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from layerinv.reproduction import registry
from layerinv.reproduction.store import ResultsStore, TrialRow

FIGURE_DIR = "figures"
REPORT_MD = "REPORT.md"
REPORT_HTML = "report.html"
PACKAGES = ("layerinv", "numpy", "scipy", "highspy", "torch", "matplotlib", "dask",
            "distributed", "threadpoolctl")


TORCH_NOT_RUN = "not run: PyTorch is not installed"


# ------------------------------------------------------------------------------ helpers
@functools.cache
def torch_missing() -> str | None:
    """Why PyTorch cannot be imported here ('No module named ...'), or None if it can."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        return str(exc) or type(exc).__name__
    return None


def not_run() -> str:
    """The cell text for a method with no rows: why it has none, where this process knows."""
    return TORCH_NOT_RUN if torch_missing() is not None else "not run"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table (cells escaped for '|')."""
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 110,
                bbox_inches: str | None = None) -> Path:
    """Write a PNG (parents created) and close the figure; the PNG carries no matplotlib
    version, so the same figure gives the same bytes. `bbox_inches='tight'` trims the margin
    (the MNIST image grids)."""
    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches=bbox_inches, metadata={"Software": None})
    plt.close(fig)
    return path


def package_versions() -> dict[str, str]:
    """Installed versions of the packages the experiments use (without importing them)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine_info() -> dict[str, str]:
    """Where the report is rendered: platform, Python, CPUs."""
    from layerinv._processes import usable_cores

    return {"platform": platform.platform(), "machine": platform.machine(),
            "processor": platform.processor() or "unknown",
            "python": platform.python_version(), "cpu_count": str(os.cpu_count()),
            "usable_cores": str(usable_cores())}


def records(rows: Sequence[TrialRow]) -> list[dict[str, Any]]:
    """Each row as one dict: params, metrics, `trial_seconds`, `_workers` (parallelism) and
    `_batch` (the size of the batch it ran in; None: alone)."""
    out = []
    for row in rows:
        record = row.record()
        record["_workers"] = row.versions.get("workers")
        record["_batch"] = row.versions.get("batch")
        out.append(record)
    return out


# ------------------------------------------------------------------------------ sections
def experiment_section(experiment: Any, rows: Sequence[TrialRow], out_dir: Path
                       ) -> tuple[str, list[str]]:
    """The Markdown of one experiment and the problems met (figures that failed...)."""

    name = registry.display_name(experiment)
    recs = records(rows)
    problems: list[str] = []
    lines = [f"## {getattr(experiment, 'TITLE', name)}", ""]
    description = registry.call_optional(experiment, "DESCRIPTION")
    if description:
        lines += [str(description), ""]
    seconds = sum(r.seconds for r in rows)
    lines += [f"`{name}`: {len(rows)} trials recorded, {seconds:.0f} s of trial time in all.", ""]
    batched = [int(r.versions["batch"]) for r in rows if int(r.versions.get("batch", 1)) > 1]
    if batched:
        lines += [f"{len(batched)} of these trials ran in batches of up to {max(batched)} "
                  f"(one tensor for all of a batch's trials): each one's seconds are the "
                  f"batch's wall time divided by its size.", ""]
    paper = registry.call_optional(experiment, "PAPER")
    if paper:
        lines += [f"**Paper.** {paper}", ""]
    try:
        verdict = experiment.verdict(recs)
    except Exception as exc:  # a report must render whatever one experiment does
        verdict = f"(no verdict: {type(exc).__name__}: {exc})"
        problems.append(f"{name}: verdict failed: {exc}")
    lines += [f"**Verdict.** {verdict}", ""]
    try:
        table = experiment.summary(recs)
    except Exception as exc:
        table = f"(no summary: {type(exc).__name__}: {exc})"
        problems.append(f"{name}: summary failed: {exc}")
    lines += ["**Ours.**", "", table, ""]
    try:
        paths = experiment.figures(recs, out_dir / FIGURE_DIR) or []
    except Exception as exc:
        paths = []
        problems.append(f"{name}: figures failed: {type(exc).__name__}: {exc}")
        lines += [f"(figures failed: {type(exc).__name__}: {exc})", ""]
    for path in paths:
        rel = Path(path).resolve().relative_to(out_dir.resolve()).as_posix()
        lines += [f"![{name}: {Path(path).stem}]({rel})", ""]
    return "\n".join(lines), problems


def machine_section(rows: Sequence[TrialRow]) -> str:
    info = machine_info()
    versions = package_versions()
    lines = ["## Machine and versions", "",
             "Rendered on: " + ", ".join(f"{k} {v}" for k, v in info.items()) + ".", "",
             "Installed here: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".", ""]
    seen: Counter[str] = Counter()
    for row in rows:
        v = row.versions
        label = ", ".join(f"{k} {v[k]}" for k in ("layerinv", "numpy", "scipy", "highspy",
                                                  "torch", "python", "platform", "cpu_count",
                                                  "workers") if k in v)
        seen[label] += 1
    if seen:
        lines += ["Trials were computed with:", ""]
        lines += [f"- {count} trials: {label}" for label, count in seen.most_common()]
        lines.append("")
    return "\n".join(lines)


def render(db: str | os.PathLike[str] | ResultsStore, out: str | os.PathLike[str],
           names: Sequence[str] | None = None) -> Path:
    """Write REPORT.md, report.html and the figures for the results in `db`; return REPORT.md.

    `names` limits the report to those experiments (default: every experiment with rows).
    """

    store = db if isinstance(db, ResultsStore) else ResultsStore(db, create=False)
    try:
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        stored = store.experiments()
        wanted = list(names) if names is not None else stored
        order = registry.names()
        ordered = [n for n in order if n in wanted] + [n for n in wanted if n not in order]
        all_rows: list[TrialRow] = []
        sections, problems = [], []
        for name in ordered:
            rows = store.rows(name)
            if not rows:
                continue
            all_rows += rows
            try:
                experiment = registry.load_experiment(name)
            except Exception as exc:
                sections.append(f"## {name}\n\n{len(rows)} trials recorded, but this layerinv "
                                f"has no experiment {name!r} to report them ({exc}).\n")
                continue
            text, trouble = experiment_section(experiment, rows, out_dir)
            sections.append(text)
            problems += trouble
        now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        header = [
            "# Reproducing Lei, Jalal, Dhillon and Dimakis (NeurIPS 2019)", "",
            "*Inverting Deep Generative Models, One Layer at a Time*, every table and figure "
            "next to the paper's own numbers. Generated by `layerinv report` from "
            f"`{store.path.name}` ({len(all_rows)} trials) on {now}. Each verdict is computed "
            "from the recorded rows.", ""]
        if not sections:
            header += ["No trials recorded yet: run `layerinv reproduce`.", ""]
        if problems:
            header += ["**Problems while rendering:**", ""] + [f"- {p}" for p in problems] + [""]
        markdown = "\n".join(header + sections + [machine_section(all_rows)])
        md_path = out_dir / REPORT_MD
        md_path.write_text(markdown, encoding="utf-8")
        (out_dir / REPORT_HTML).write_text(markdown_to_html(markdown, out_dir),
                                           encoding="utf-8")
        return md_path
    finally:
        if not isinstance(db, ResultsStore):
            store.close()


# ------------------------------------------------------------------------------ HTML
_IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)]+)\)$")
_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; line-height: 1.45; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.55em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
code { background: #f5f5f5; padding: 0 0.2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
"""


def _inline(text: str) -> str:
    """Escape HTML, then `code` and **bold** (enough for what the report writes)."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if len(part) >= 2 and part.startswith("`") and part.endswith("`"):
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            escaped = html.escape(part)
            escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
            escaped = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>",
                             escaped)
            out.append(escaped)
    return "".join(out)


def _table_cells(line: str) -> list[str]:
    body = line.strip()[1:-1]
    cells = re.split(r"(?<!\\)\|", body)
    return [c.strip().replace("\\|", "|") for c in cells]


def markdown_to_html(markdown: str, base: Path) -> str:
    """HTML for the Markdown subset the report writes, PNGs embedded as data URIs."""
    lines = markdown.splitlines()
    body: list[str] = []
    paragraph: list[str] = []
    title = "layerinv report"

    def flush() -> None:
        if paragraph:
            body.append("<p>" + _inline(" ".join(paragraph)) + "</p>")
            paragraph.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            flush()
        elif stripped.startswith("#"):
            flush()
            level = len(stripped) - len(stripped.lstrip("#"))
            text = stripped[level:].strip()
            if level == 1:
                title = text
            body.append(f"<h{level}>{_inline(text)}</h{level}>")
        elif stripped.startswith("|") and i + 1 < len(lines) and \
                re.match(r"^\|(\s*:?-+:?\s*\|)+\s*$", lines[i + 1].strip()):
            flush()
            header = _table_cells(stripped)
            rows_html = ["<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in header) + "</tr>"]
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                cells = _table_cells(lines[i])
                rows_html.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in cells)
                                 + "</tr>")
                i += 1
            body.append("<table>\n" + "\n".join(rows_html) + "\n</table>")
            continue
        elif _IMAGE.match(stripped):
            flush()
            match = _IMAGE.match(stripped)
            assert match is not None
            src = base / match["src"]
            alt = html.escape(match["alt"])
            if src.is_file():
                data = base64.b64encode(src.read_bytes()).decode("ascii")
                body.append(f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{alt}</figcaption></figure>")
            else:
                body.append(f"<p>(missing figure {html.escape(match['src'])})</p>")
        elif stripped.startswith("- "):
            flush()
            items = []
            while i < len(lines) and lines[i].strip().startswith("- "):
                items.append(f"<li>{_inline(lines[i].strip()[2:])}</li>")
                i += 1
            body.append("<ul>" + "".join(items) + "</ul>")
            continue
        else:
            paragraph.append(stripped)
        i += 1
    flush()
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
