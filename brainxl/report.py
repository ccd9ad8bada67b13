"""The run report: figures as PNGs plus a Markdown and a self-contained HTML page.

:func:`write_report` writes, under ``RUN_DIR/report/``:

- ``<name>.png`` for every figure,
- ``summary.json`` (the :class:`brainxl.metrics.FoldSummary`, reloadable with
  :func:`brainxl.metrics.from_json`),
- ``report.md`` linking the PNGs, and
- ``report.html`` with the same content and the images embedded (base64), so the single
  file can be mailed or opened anywhere.

Every file is written to a temporary name and renamed, and all inputs are checked before
anything is written, so a bad call never leaves a half-written report. Logging to W&B is
the trainer's job: :class:`ReportFiles` lists the PNG paths to log.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brainxl import versions
from brainxl.files import atomic_write_bytes
from brainxl.metrics import FoldSummary, Interval, paired_difference, to_json
from brainxl.versions import REPORT_PACKAGES

#: The report's folder inside a run folder (``RunDir.report_dir``).
REPORT_DIR = "report"

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")

Table = tuple[list[str], list[list[Any]]]


@dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_report`; ``os.fspath()`` of it is the HTML report.

    Attributes
    ----------
    directory : Path
        ``RUN_DIR/report``.
    html : Path
    markdown : Path
    summary_json : Path
    figures : dict of str to Path
        One PNG per figure name (log these to W&B).
    """

    directory: Path
    html: Path
    markdown: Path
    summary_json: Path
    figures: dict[str, Path] = field(default_factory=dict)

    def __fspath__(self) -> str:
        return str(self.html)

    def __str__(self) -> str:
        return str(self.html)


# --------------------------------------------------------------------------- helpers
def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (bool, str)):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f"{f:.{digits}f}" if math.isfinite(f) else "n/a"
    return str(v)


def _interval_text(iv: Interval | None) -> str:
    return "n/a" if iv is None else str(iv)


def package_versions(packages: Sequence[str] = REPORT_PACKAGES) -> dict[str, str]:
    """Installed versions (from package metadata, nothing is imported) plus Python/platform."""
    return versions.package_versions(packages, with_platform=True, missing="not installed")


def _rows_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    headers: list[str] = []
    for r in rows:
        for k in r:
            if k not in headers:
                headers.append(str(k))
    return headers, [[r.get(h, "") for h in headers] for r in rows]


def _subject_table(summary: FoldSummary, baseline: FoldSummary | None) -> Table:
    base = {s.subject: s for s in baseline.per_subject} if baseline is not None else {}
    headers = ["subject", "TRs", "r", "rho", "cos", "ceiling", "fraction of ceiling", "ROIs"]
    if base:
        headers += ["baseline r", "model - baseline"]
    rows = []
    for s in summary.per_subject:
        row = [
            f"sub-{s.subject}",
            s.n_times,
            s.mean_r,
            s.mean_rho,
            s.mean_cos,
            s.mean_ceiling,
            s.mean_fraction_of_ceiling,
            f"{s.n_valid_rois}/{len(s.roi_names)}",
        ]
        if base:
            b = base.get(s.subject)
            row += [None, None] if b is None else [b.mean_r, s.mean_r - b.mean_r]
        rows.append(row)
    return headers, rows


def _roi_table(summary: FoldSummary) -> Table:
    headers = ["ROI", "r", "rho", "cos", "subjects"]
    if summary.roi_ceiling is not None:
        headers += ["ceiling", "fraction of ceiling"]
    rows = []
    for i, name in enumerate(summary.roi_names):
        row = [
            name,
            float(summary.roi_r[i]),
            float(summary.roi_rho[i]),
            float(summary.roi_cos[i]),
            int(summary.roi_n[i]),
        ]
        if summary.roi_ceiling is not None and summary.roi_fraction is not None:
            row += [float(summary.roi_ceiling[i]), float(summary.roi_fraction[i])]
        rows.append(row)
    return headers, rows


def _summary_lines(summary: FoldSummary) -> list[tuple[str, str]]:
    lines = [
        ("held-out subjects", f"{len(summary.subjects)} ({', '.join(summary.subjects)})"),
        ("mean Pearson r", _interval_text(summary.r)),
        ("mean Spearman rho", _interval_text(summary.rho)),
        ("mean cosine", _interval_text(summary.cos)),
    ]
    if summary.fraction_of_ceiling is not None:
        lines.append(("fraction of noise ceiling", _interval_text(summary.fraction_of_ceiling)))
    return lines


def _baseline_lines(
    summary: FoldSummary, baseline: FoldSummary | float, name: str
) -> list[tuple[str, str]]:
    if isinstance(baseline, FoldSummary):
        b_mean, b_text = baseline.r.mean, _interval_text(baseline.r)
    else:
        b_mean = float(baseline)
        b_text = _fmt(b_mean)
    lines = [
        ("model mean r", _interval_text(summary.r)),
        (f"{name} mean r", b_text),
        ("difference (model - baseline)", _fmt(summary.r.mean - b_mean)),
    ]
    if isinstance(baseline, FoldSummary) and set(baseline.subjects) & set(summary.subjects):
        lines.append(("difference, paired by subject", str(paired_difference(summary, baseline))))
    return lines


# --------------------------------------------------------------------------- renderers
def _md_table(t: Table) -> str:
    headers, rows = t
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    out = ["| " + " | ".join(esc(h) for h in headers) + " |"]
    out.append("|" + "|".join("---" for _ in headers) + "|")
    for r in rows:
        out.append("| " + " | ".join(esc(_fmt(v)) for v in r) + " |")
    return "\n".join(out)


def _html_table(t: Table, cls: str = "") -> str:
    headers, rows = t
    h = "".join(f"<th>{html.escape(str(x))}</th>" for x in headers)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>" for r in rows
    )
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>\n{body}\n</tbody></table>'


def _kv_table(lines: list[tuple[str, str]]) -> Table:
    return ["quantity", "value"], [[k, v] for k, v in lines]


_CSS = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0 1.5em; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.85em; }
.note { color: #a05000; }
"""


def write_report(
    run_dir: str | os.PathLike[str],
    summary: FoldSummary,
    figures: Mapping[str, Figure],
    config: Mapping[str, Any],
    extra_tables: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    baseline: FoldSummary | float | None = None,
    baseline_name: str = "ridge (band power)",
    title: str = "brainxl run report",
    notes: Sequence[str] = (),
) -> ReportFiles:
    """Write the run report (PNGs, ``summary.json``, ``report.md``, ``report.html``).

    Parameters
    ----------
    run_dir : path
        The run folder; everything goes to ``run_dir/report/`` (existing files of the
        same names are replaced, others are left alone).
    summary : FoldSummary
        Scores of the held-out subjects (per-subject and per-ROI tables, 95% interval).
    figures : dict of str to Figure
        Name (letters, digits, ``_-.``; becomes ``<name>.png``) to figure, in display order.
    config : dict
        The resolved run configuration (written as JSON; non-JSON values via ``str``).
    extra_tables : dict of str to list of dict, optional
        Title to rows (dicts; columns are the union of their keys), e.g. timings.
    baseline : FoldSummary or float, optional
        The baseline's scores on the same held-out subjects (or just its mean r): adds a
        model-vs-baseline comparison and per-subject baseline columns.
    baseline_name : str
    title : str
    notes : sequence of str
        Extra caveats shown under the summary (the summary's own notes are always shown).

    Returns
    -------
    ReportFiles
        Paths written; ``os.fspath(result)`` is the HTML report.
    """
    # Check everything before writing anything.
    if not isinstance(summary, FoldSummary):
        raise ValueError(
            f"summary must be a brainxl.metrics.FoldSummary, got {type(summary).__name__}; "
            "build one with brainxl.metrics.summarize()"
        )
    if baseline is not None and not isinstance(baseline, (FoldSummary, int, float)):
        raise ValueError(f"baseline must be a FoldSummary or a number, got {type(baseline)}")
    for name, fig in figures.items():
        if not _NAME_RE.match(str(name)) or str(name).endswith("."):
            raise ValueError(
                f"figure name {name!r} is not a safe file name: use letters, digits, '_', '-'"
            )
        if not hasattr(fig, "savefig"):
            raise ValueError(f"figure {name!r} is a {type(fig).__name__}, not a matplotlib Figure")
    try:
        config_text = json.dumps(config, indent=2, sort_keys=True, default=str)
    except (TypeError, ValueError) as err:
        raise ValueError(f"config cannot be written as JSON ({err})") from err
    tables: dict[str, Table] = {}
    for tname, rows in (extra_tables or {}).items():
        if not all(isinstance(r, Mapping) for r in rows):
            raise ValueError(f"extra table {tname!r} must be a list of dicts (one per row)")
        tables[str(tname)] = _rows_table(rows)

    out = Path(run_dir) / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    pngs: dict[str, bytes] = {}
    paths: dict[str, Path] = {}
    for name, fig in figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        pngs[name] = buf.getvalue()
        paths[name] = out / f"{name}.png"
        atomic_write_bytes(paths[name], pngs[name])
    summary_json = out / "summary.json"
    to_json(summary, summary_json)

    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    base_summary = baseline if isinstance(baseline, FoldSummary) else None
    subj = _subject_table(summary, base_summary)
    roi = _roi_table(summary)
    all_notes = list(summary.notes) + list(notes)
    versions = _kv_table(list(package_versions().items()))
    versions = (["package", "version"], versions[1])

    # Markdown
    md = [f"# {title}", "", f"Run folder: `{Path(run_dir)}`  ", f"Written: {when}", ""]
    md += ["## Summary", "", _md_table(_kv_table(_summary_lines(summary))), ""]
    md += [f"- **Note:** {n}" for n in all_notes] + ([""] if all_notes else [])
    if baseline is not None:
        md += ["## Baseline comparison", ""]
        md += [_md_table(_kv_table(_baseline_lines(summary, baseline, baseline_name))), ""]
    md += ["## Per-subject results", "", _md_table(subj), ""]
    md += ["## Figures", ""]
    for name in figures:
        md += [f"### {name}", "", f"![{name}]({name}.png)", ""]
    md += ["## Per-ROI results (mean across held-out subjects)", "", _md_table(roi), ""]
    for tname, t in tables.items():
        md += [f"## {tname}", "", _md_table(t), ""]
    md += ["## Configuration", "", "```json", config_text, "```", ""]
    md += ["## Versions", "", _md_table(versions), ""]

    # HTML
    e = html.escape
    h = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p>Run folder: <code>{e(str(Path(run_dir)))}</code><br>Written: {e(when)}</p>",
        "<h2>Summary</h2>",
        _html_table(_kv_table(_summary_lines(summary)), "summary"),
    ]
    h += [f'<p class="note"><b>Note:</b> {e(n)}</p>' for n in all_notes]
    if baseline is not None:
        h += ["<h2>Baseline comparison</h2>"]
        h += [_html_table(_kv_table(_baseline_lines(summary, baseline, baseline_name)))]
    h += ["<h2>Per-subject results</h2>", _html_table(subj, "subjects"), "<h2>Figures</h2>"]
    for name, data in pngs.items():
        b64 = base64.b64encode(data).decode("ascii")
        h += [f"<h3>{e(name)}</h3>", f'<img alt="{e(name)}" src="data:image/png;base64,{b64}">']
    h += ["<h2>Per-ROI results (mean across held-out subjects)</h2>", _html_table(roi, "rois")]
    for tname, t in tables.items():
        h += [f"<h2>{e(tname)}</h2>", _html_table(t)]
    h += ["<h2>Configuration</h2>", f"<pre>{e(config_text)}</pre>"]
    h += ["<h2>Versions</h2>", _html_table(versions), "</body></html>"]

    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_bytes(md_path, "\n".join(md).encode("utf-8"))
    atomic_write_bytes(html_path, "\n".join(h).encode("utf-8"))
    return ReportFiles(
        directory=out, html=html_path, markdown=md_path, summary_json=summary_json, figures=paths
    )
