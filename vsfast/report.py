"""A self-contained report page: sections of paragraphs, tables and figures, written as one HTML
file (figures embedded as data URIs) that a browser opens with no server; and the files of an
analysis (:func:`write_analysis`): ``layers.csv``, ``layers.json``, spectra figures, ``report.html``."""

from __future__ import annotations

import base64
import html
import importlib.util
import json
import logging
import math
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = ["Section", "analysis_section", "summary", "write_analysis", "write_html"]

log = logging.getLogger(__name__)

# Panels per spectra figure: a model's matrices are drawn over as many figures as they need.
SPECTRA_PER_FIGURE = 24
# The metrics the report's table shows, beside the layer's name, kind and shape.
TABLE_COLUMNS = ("layer", "kind", "view", "rows", "columns", "k", "rank", "condition_number", "sigma_max",
                 "frobenius_norm", "stable_rank", "effective_rank", "alpha", "energy_kept",
                 "rejected_fraction_median")


@dataclass
class Section:
    """A part of the report page: a heading, paragraphs, a table and figures (PNG names)."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file name, caption)
    summary: dict = field(default_factory=dict)  # the section's numbers, for a summary JSON


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; } figcaption { font-size: 0.85em; color: #555; }
"""


def write_html(path: str | Path, title: str, sections: list[Section], *, intro: str = "") -> Path:
    """Write one self-contained HTML page; figures named in the sections are read from the
    page's folder and embedded as data URIs."""
    path = Path(path)
    parts = [f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    if intro:
        parts.append(f"<p>{html.escape(intro)}</p>")
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
        if section.rows:
            columns = list(dict.fromkeys(k for row in section.rows for k in row))
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>")
            for row in section.rows:
                parts.append("<tr>" + "".join(f"<td>{html.escape(_cell(row.get(c, '')))}</td>" for c in columns)
                             + "</tr>")
            parts.append("</table>")
        for name, caption in section.figures:
            data = base64.b64encode((path.parent / name).read_bytes()).decode("ascii")
            parts.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>\n")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _cell(value) -> str:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def analysis_section(report, title: str, figures: list[tuple[str, str]] = ()) -> Section:
    """The report page's section for an analysis (:class:`vsfast.Report`): what was analysed,
    what was left out and why, the metrics table, and the figures given."""
    rows = [{c: row[c] for c in TABLE_COLUMNS if c in row} for row in report.to_rows()]
    paragraphs = [f"{len(report)} matrices of {report.source} analysed. Metrics (see docs/analysis.md): sigma_max "
                  "is the spectral norm, stable_rank = ||W||_F^2 / sigma_max^2, effective_rank = exp(entropy of "
                  "the normalised singular values, whole spectra only), alpha the power-law exponent of the "
                  "eigenvalues' tail (Clauset-Shalizi-Newman), energy_kept the share of ||W||_F^2 in the top k; "
                  "k singular values were computed per matrix."]
    if report.skipped:
        reasons = Counter(_reason_kind(reason) for _, reason in report.skipped)
        paragraphs.append(f"Not analysed: {len(report.skipped)} tensors (" +
                          ", ".join(f"{count} {reason}" for reason, count in reasons.most_common()) +
                          "); layers.json names each with its reason.")
    return Section(title, paragraphs, rows, list(figures), summary=report.to_dict())


def _reason_kind(reason: str) -> str:
    """A skip reason without its particulars, for counting: "1-D", "the same tensor as ...", ..."""
    return reason.split(":")[0].split(" as ")[0].split(", shape")[0]


def summary(report) -> str:
    """A plain-text table of the analysis, one line per matrix, for a terminal."""
    lines = [f"{len(report)} matrices of {report.source}"
             + (f", {len(report.skipped)} tensors not analysed (see layers.json)" if report.skipped else "")]
    width = min(60, max((len(layer.name) for layer in report), default=5))
    lines.append(f"{'layer':<{width}}  {'shape':>13}  {'rank':>6}  {'sigma_max':>10}  {'stable_rank':>11}  "
                 f"{'alpha':>7}")
    for layer in report:
        shape = f"{layer.shape[0]}x{layer.shape[1]}"
        name = layer.name if len(layer.name) <= width else "…" + layer.name[-(width - 1):]
        lines.append(f"{name:<{width}}  {shape:>13}  {layer.rank:>6}  {layer.sigma_max:>10.4g}  "
                     f"{layer.stable_rank:>11.4g}  {layer.alpha:>7.3g}")
    return "\n".join(lines)


def write_analysis(report, out: str | Path, *, title: str) -> Path:
    """Write an analysis to the folder ``out``: ``layers.csv`` (the table), ``layers.json``
    (everything, singular values and skipped tensors included), ``spectra_N.png`` (needs
    matplotlib; without it they are left out, with a warning) and ``report.html``. The files are
    written to a temporary folder first and moved into ``out`` once all exist: a failure leaves
    ``out`` as it was. Returns the page's path."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out}: not a directory")
    staging = Path(tempfile.mkdtemp(prefix="vsfast-analysis-"))
    try:
        report.to_csv(staging / "layers.csv")
        (staging / "layers.json").write_text(report.to_json(indent=1) + "\n", encoding="utf-8")
        figures = _spectra_figures(report, staging)
        write_html(staging / "report.html", title, [analysis_section(report, "Every matrix", figures)])
        out.mkdir(parents=True, exist_ok=True)
        for path in sorted(staging.iterdir()):
            target = out / path.name
            if target.is_file():
                target.unlink()
            shutil.move(str(path), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / "report.html"


def _tail(name: str, width: int = 36) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _spectra_figures(report, folder: Path) -> list[tuple[str, str]]:
    """spectra_1.png, spectra_2.png, ...: every matrix's singular values, SPECTRA_PER_FIGURE a figure."""
    if importlib.util.find_spec("matplotlib") is None:
        log.warning("figures left out: they need matplotlib (pip install vsfast[viz])")
        return []
    from . import viz

    layers = list(report)
    figures = []
    for number, start in enumerate(range(0, len(layers), SPECTRA_PER_FIGURE), 1):
        # Panel titles are narrow: the end of a long name is the part that tells layers apart.
        chunk = [replace(layer, name=_tail(layer.name)) for layer in layers[start:start + SPECTRA_PER_FIGURE]]
        name = f"spectra_{number}.png"
        fig = viz.spectra(chunk)
        viz.save(fig, folder / name)
        figures.append((name, f"Singular values of matrices {start + 1}-{start + len(chunk)} (log scale); the "
                              "dashed line is the numerical rank."))
    return figures
