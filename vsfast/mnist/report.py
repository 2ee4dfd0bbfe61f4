"""The paper's MNIST models analysed and inverted, written to a folder: PNG figures, a JSON and
CSV per model, and sections for the report page (:mod:`vsfast.report`)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from .. import viz
from ..analysis import Report, analyze
from ..inverse import _is_chain, class_targets, invert, model_outputs
from ..linalg import RangeWarning
from ..report import Section
from . import models

__all__ = ["analyze_model", "first_of_each_class", "invert_model"]


def first_of_each_class(labels: np.ndarray, classes: int = 10) -> np.ndarray:
    """Index of the first example of each class that ``labels`` has."""
    return np.array([int(np.flatnonzero(labels == c)[0]) for c in range(classes) if np.any(labels == c)], dtype=int)


def analyze_model(name: str, out: str | Path, images: np.ndarray, labels: np.ndarray, *, method: str = "auto",
                  k: int | None = None, conv_view: str = "patch", model=None,
                  progress: bool = False) -> tuple[Report, Section]:
    """Analyse one of the MNIST models on ``images`` and write its figures and tables to ``out``.

    ``model``: the network ``name`` names, loaded already (default: ``models.load(name)``).
    Returns the report and the page section describing it.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = models.load(name) if model is None else model
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
                 model=None, progress: bool = False) -> Section:
    """Inputs for the paper's per-class targets of one MNIST model (from its outputs on
    ``images``), written as a figure per reference and a JSON of the errors.

    Invertible chains go through the pseudoinverse, minimum-norm and with the class mean as
    reference (by default); other models through the gradient search from the class mean.
    ``model`` as for :func:`analyze_model`.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = models.load(name) if model is None else model
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
                 "σ₁": f"{row['sigma_max']:.3g}", "stable rank": f"{row['stable_rank']:.3g}",
                 "effective rank": f"{row['effective_rank']:.3g}", "alpha": f"{row['alpha']:.3g}"}
        if "rejected_fraction_median" in row:
            entry["rejected (median)"] = f"{100 * row['rejected_fraction_median']:.1f} %"
        rows.append(entry)
    return rows
