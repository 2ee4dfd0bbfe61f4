"""Analysis of the paper's MNIST models written to a folder: PNG figures, a summary JSON and CSV
per model, and ``report.html``, one self-contained page (figures embedded) a browser opens with
no server."""

from __future__ import annotations

import base64
import html
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .analysis import Report, analyze
from .linalg import RangeWarning

__all__ = ["Section", "analyze_model", "first_of_each_class", "invert_model", "write_html"]


@dataclass
class Section:
    """A part of the report page: a heading, paragraphs, a table and figures (PNG names)."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file name, caption)
    summary: dict = field(default_factory=dict)  # the section's numbers, for a summary JSON


def first_of_each_class(labels: np.ndarray, classes: int = 10) -> np.ndarray:
    """Index of the first example of each class that ``labels`` has."""
    return np.array([int(np.flatnonzero(labels == c)[0]) for c in range(classes) if np.any(labels == c)], dtype=int)


def analyze_model(name: str, out: str | Path, images: np.ndarray, labels: np.ndarray, *, method: str = "auto",
                  k: int | None = None, conv_view: str = "patch", progress: bool = False) -> tuple[Report, Section]:
    """Analyse one of the MNIST models on ``images`` and write its figures and tables to ``out``.

    Returns the report and the page section describing it.
    """
    from . import models, viz

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = models.load(name)
    report = analyze(model, images, method=method, k=k, conv_view=conv_view, progress=progress)
    (out / f"{name}_layers.json").write_text(report.to_json(indent=1) + "\n")
    report.to_csv(out / f"{name}_layers.csv")

    first = report[0]
    accuracy = getattr(model, "card", {}).get("test_accuracy")
    section = Section(f"{name}: the spaces of every layer", rows=_table(report),
                      summary={"test_accuracy": accuracy, "layers": report.to_rows()})
    section.paragraphs.append(
        f"{len(report)} layer{'s' if len(report) != 1 else ''} analysed ({first.spaces.method} SVD{'' if k is None else f', top {k}'}); "
        + (f"test accuracy {100 * accuracy:.2f} %. " if accuracy is not None else "")
        + f"The first layer, {first.name} ({first.shape[0]}×{first.shape[1]}), has rank {first.rank} and rejects "
          f"a median {100 * np.median(first.rejected_fraction):.1f} % of the energy of {len(images)} test digits.")

    viz.save(viz.spectra(report), out / f"{name}_spectra.png")
    section.figures.append((f"{name}_spectra.png", "Singular values of every layer; the dashed line is the rank."))
    chosen = first_of_each_class(labels)
    if first.kind == "linear" and first.shape[1] == 28 * 28:
        viz.save(viz.signal_basis(first.spaces), out / f"{name}_signal_basis.png")
        viz.save(viz.rejected_samples(first.spaces), out / f"{name}_rejected.png")
        section.figures += [(f"{name}_signal_basis.png", "First-layer signal-space basis, by singular value."),
                            (f"{name}_rejected.png", "Random directions of the first layer's rejected space.")]
    if first.inputs is not None and first.inputs.inputs[0].size == 28 * 28:
        parts = (first.inputs.inputs, first.inputs.signal, first.inputs.residual)
        viz.save(viz.decomposition(*(p[chosen].reshape(-1, 28, 28) for p in parts), labels[chosen]),
                 out / f"{name}_decomposition.png")
        section.figures.append((f"{name}_decomposition.png",
                                "Digits, their signal part and their residual part at the first layer."))
    if first.kind == "conv2d":
        kernel_spaces = analyze(model.get_submodule(first.name), conv_view="kernel")[0].spaces
        viz.save(viz.conv_kernels(model.get_submodule(first.name).weight, kernel_spaces), out / f"{name}_conv1.png")
        section.figures.append((f"{name}_conv1.png", "The first convolution's kernels and the top singular "
                                                     "vectors of its kernel view."))
    return report, section


def invert_model(name: str, out: str | Path, images: np.ndarray, labels: np.ndarray, *,
                 references: tuple[str | None, ...] | None = None, max_iter: int = 200,
                 progress: bool = False) -> Section:
    """Inputs for the paper's per-class targets of one MNIST model (from its outputs on
    ``images``), written as a figure per reference and a JSON of the errors.

    Invertible chains go through the pseudoinverse, minimum-norm and with the class mean as
    reference (by default); other models through the gradient search from the class mean.
    """
    from . import models, viz
    from .inverse import _is_chain, class_targets, invert, model_outputs

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = models.load(name)
    chain = _is_chain(model)
    if references is None:
        references = (None, "class-mean") if chain else ("class-mean",)
    targets = class_targets(model_outputs(model, images), labels)
    means = np.stack([images[labels == c].mean(axis=0) for c in range(targets.shape[1])])
    section = Section(f"{name}: inputs for chosen outputs")
    section.paragraphs.append(
        "Targets: for each class c, output c at its largest value on the training digits of class c and every "
        "other output at its smallest on them (the paper's choice). "
        + ("The network is a chain of Linear layers and invertible activations: its inputs come from the chained "
           "pseudoinverse." if chain else "The network is not invertible layer by layer: its inputs come from a "
                                          "gradient search in the pixel box [0, 1]."))
    results = {}
    for reference in references:
        label = reference or "minimum-norm"
        with warnings.catch_warnings():  # the clamps are reported in the section below
            warnings.simplefilter("ignore", RangeWarning)
            result = invert(model, targets, reference=reference, data=(images, labels), max_iter=max_iter,
                            progress=progress)
        through_model = model_outputs(model, result.inputs.astype(np.float32))
        float32_error = np.linalg.norm(through_model - targets, axis=1) / np.linalg.norm(targets, axis=1)
        predicted = through_model.argmax(axis=1)
        entry = {
            "method": result.method,
            "relative_output_error_max": float(result.error.max()),
            "relative_output_error_median": float(np.median(result.error)),
            "relative_output_error_float32_model": float(float32_error.max()),
            "predicted": predicted.tolist(),
            "clamped_per_layer": list(result.clamped),
            "iterations": result.iterations.tolist(),
            "distance_to_class_mean": float(np.mean(np.linalg.norm(
                (result.inputs - means).reshape(len(means), -1), axis=1))),
        }
        results[label] = entry
        figure = f"{name}_inverse_{label}.png"
        titles = [f"target {c}, predicted {p}" for c, p in enumerate(predicted)]
        viz.save(viz.image_grid(result.inputs.reshape(len(targets), 28, 28), titles, size=1.5,
                                title=f"{name}: inputs for the per-class targets ({label})"), out / figure)
        section.figures.append((figure, f"{label}: each image's outputs are its class's target."))
        section.paragraphs.append(
            f"{label}: relative output error at most {entry['relative_output_error_max']:.1e} "
            f"({entry['relative_output_error_float32_model']:.1e} through the float32 model), "
            f"{int(np.sum(predicted == np.arange(len(predicted))))}/{len(predicted)} target classes predicted, "
            f"mean distance to the class-mean image {entry['distance_to_class_mean']:.1f}"
            + (f"; the direct chained preimage left the activation range ({sum(result.clamped)} entries) and was "
               "repaired through the forward map" if any(result.clamped) else "") + ".")
    (out / f"{name}_inverse.json").write_text(json.dumps(results, indent=1) + "\n")
    section.summary = results
    return section


def _table(report: Report) -> list[dict]:
    rows = []
    for row in report.to_rows():
        entry = {"layer": row["layer"], "view": row["view"], "shape": f"{row['rows']}×{row['columns']}",
                 "rank": row["rank"], "nullity": row["nullity"], "condition": f"{row['condition_number']:.3g}",
                 "σ₁": f"{row['sigma_max']:.3g}"}
        if "rejected_fraction_median" in row:
            entry["rejected (median)"] = f"{100 * row['rejected_fraction_median']:.1f} %"
        rows.append(entry)
    return rows


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
