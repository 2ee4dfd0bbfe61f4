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
from ..linalg import RangeWarning, project, spaces
from ..report import Section
from . import models

__all__ = ["CONDITION_THRESHOLD", "PAPER_ACCURACY", "PIXEL_LAYERS", "accuracy_section", "analyze_model",
           "conv_section", "first_of_each_class", "invert_model", "pixel_section", "pixel_signals"]

#: Test accuracy the paper reports for each network.
PAPER_ACCURACY = {"fcnn1": 0.92, "fcnn5": 0.97, "resnet18": 0.99}

#: The paper calls a layer ill-conditioned when sigma_1 / sigma_r exceeds this.
CONDITION_THRESHOLD = 10.0

#: Layers whose signal is mapped back to pixels, per network (module names). ResNet18's last
#: layer only: the Jacobian of an intermediate layer (up to 12,544 x 784 per digit) costs more
#: than the demo's time allows.
PIXEL_LAYERS = {"fcnn1": ("1",), "fcnn5": ("1", "3", "5", "7", "9"), "resnet18": ("fc",)}

_NAMES = {"fcnn1": "FCNN-1", "fcnn5": "FCNN-5", "resnet18": "ResNet18"}


def first_of_each_class(labels: np.ndarray, classes: int = 10) -> np.ndarray:
    """Index of the first example of each class that ``labels`` has."""
    return np.array([int(np.flatnonzero(labels == c)[0]) for c in range(classes) if np.any(labels == c)], dtype=int)


def accuracy_section(loaded: dict) -> Section:
    """The paper's test accuracies beside those of the shipped networks (``loaded``: name ->
    model with its card), measured on the 10,000 official test images from exactly the weights
    that ship."""
    rows = []
    for name, model in loaded.items():
        card = getattr(model, "card", {})
        measured = card.get("test_accuracy")
        rows.append({"network": _NAMES.get(name, name),
                     "paper": f"{100 * PAPER_ACCURACY[name]:.0f} %" if name in PAPER_ACCURACY else "",
                     "shipped weights": "" if measured is None else f"{100 * measured:.2f} %",
                     "test images": card.get("test_images", ""),
                     "parameters": f"{sum(p.numel() for p in model.parameters()):,}",
                     "stored as": card.get("storage_dtype", "float32")})
    section = Section("The three networks: test accuracy", rows=rows,
                      summary={row["network"]: row for row in rows})
    section.paragraphs.append(
        "Accuracy on the 10,000 official MNIST test images, measured from exactly the weights that ship with the "
        "package (ResNet18's stored in float16 and cast back to float32), beside the accuracy the paper reports. "
        "`vsfast train NAME` reproduces each network from seed 0.")
    return section


def analyze_model(name: str, out: str | Path, images: np.ndarray, labels: np.ndarray, *, method: str = "auto",
                  k: int | None = None, conv_view: str = "patch", model=None, inputs: str = "all",
                  progress: bool = False) -> tuple[Report, Section]:
    """Analyse one of the MNIST models on ``images`` and write its figures and tables to ``out``.

    ``model``: the network ``name`` names, loaded already (default: ``models.load(name)``).
    ``inputs``: ``"all"`` splits the images' activations at every layer; ``"first"`` only at
    the first layer (the others get their spaces alone: ResNet18's every layer on 1,000 digits
    takes minutes). Returns the report and the page section describing it.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = models.load(name) if model is None else model
    if inputs not in ("all", "first"):
        raise ValueError(f"inputs: expected 'all' or 'first', got {inputs!r}")
    report = analyze(model, images if inputs == "all" else None, method=method, k=k, conv_view=conv_view,
                     progress=progress)
    first = report[0]
    if inputs == "first":  # the first layer sees the images themselves
        first.inputs = analyze(model.get_submodule(first.name), images, method=method, k=k,
                               conv_view=conv_view)[0].inputs
    (out / f"{name}_layers.json").write_text(report.to_json(indent=1) + "\n")
    report.to_csv(out / f"{name}_layers.csv")

    accuracy = getattr(model, "card", {}).get("test_accuracy")
    flagged = [layer.name for layer in report if layer.condition_number > CONDITION_THRESHOLD]
    section = Section(f"{_NAMES.get(name, name)}: the spaces of every layer", rows=_table(report),
                      summary={"test_accuracy": accuracy, "layers": report.to_rows(),
                               "ill_conditioned": flagged})
    section.paragraphs.append(
        f"{len(report)} layer{'s' if len(report) != 1 else ''} analysed ({first.spaces.method} SVD"
        f"{'' if k is None else f', top {k}'}); "
        + (f"test accuracy {100 * accuracy:.2f} %. " if accuracy is not None else "")
        + f"The first layer, {first.name} ({first.shape[0]}×{first.shape[1]}), has rank {first.rank} and rejects "
          f"a median {100 * np.median(first.rejected_fraction):.1f} % of the energy of {len(images)} test digits. "
        + (f"{len(flagged)} of {len(report)} layers have a condition number σ₁/σᵣ above the paper's threshold of "
           f"{CONDITION_THRESHOLD:g} (flagged in the table): inverting them amplifies errors by that much."
           if flagged else f"No layer has a condition number σ₁/σᵣ above the paper's threshold of "
                           f"{CONDITION_THRESHOLD:g}."))

    viz.save(viz.spectra(report, condition_threshold=CONDITION_THRESHOLD), out / f"{name}_spectra.png")
    section.figures.append((f"{name}_spectra.png",
                            "Singular values σᵢ of every layer against their index i (log scale); the dashed red line "
                            "is the rank r, the title gives σ₁/σᵣ, in red where it exceeds the paper's threshold of "
                            f"{CONDITION_THRESHOLD:g}. Look for how fast each spectrum falls: a steep fall means a "
                            "few directions carry the layer."))
    chosen = first_of_each_class(labels)
    if first.kind == "linear" and first.shape[1] == 28 * 28:
        viz.save(viz.signal_basis(first.spaces), out / f"{name}_signal_basis.png")
        viz.save(viz.rejected_samples(first.spaces), out / f"{name}_rejected.png")
        section.figures += [
            (f"{name}_signal_basis.png", "The first layer's signal space: its top basis vectors (right singular "
                                         "vectors) as 28×28 images, red positive and blue negative, each with its "
                                         "singular value. These are the pixel patterns the layer responds to."),
            (f"{name}_rejected.png", "Random unit vectors of the first layer's rejected space: images the layer "
                                     "maps to zero, whatever is added of them. They look like noise: the layer "
                                     "is blind to everything but its few signal directions.")]
    if first.inputs is not None and first.inputs.inputs[0].size == 28 * 28:
        parts = (first.inputs.inputs, first.inputs.signal, first.inputs.residual)
        viz.save(viz.decomposition(*(p[chosen].reshape(-1, 28, 28) for p in parts), labels[chosen]),
                 out / f"{name}_decomposition.png")
        section.figures.append((f"{name}_decomposition.png",
                                f"One test digit of each class split by the first layer, {first.name}: the digit "
                                "(top), its signal part, the projection onto the layer's signal space (middle), and "
                                "its residual, the part in the rejected space that the layer cannot see (bottom, "
                                "red above zero, blue below, one scale for the row), with the share of the digit's "
                                "energy it holds. Signal + residual = digit."
                                + (" The convolution sees patches: the parts are its patches' parts folded back, "
                                   "overlaps averaged." if first.kind == "conv2d" else "")))
    return report, section


def pixel_signals(model, layer_names, images: np.ndarray) -> list[np.ndarray]:
    """Per layer, what of each image reaches it, in pixels: the image's projection onto the row
    space of the Jacobian of that layer's output (before its activation) with respect to the
    pixels, at the image. For the first layer that Jacobian is the layer's own weight, so this
    is its signal part; deeper, it is the signal space seen through the layers below, linearised
    at the image (exact for a linear chain, and for a ReLU network as long as no unit changes
    sign). Returns one (N x 28 x 28) array per layer.
    """
    import copy

    import torch
    from torch.func import jacfwd, jacrev

    net = copy.deepcopy(model).double().eval()
    modules = [net.get_submodule(n) for n in layer_names]
    shape = tuple(next(iter(images)).shape)

    def outputs(flat):
        captured = {}
        hooks = [m.register_forward_hook(lambda _m, _i, o, k=k: captured.__setitem__(k, o))
                 for k, m in enumerate(modules)]
        try:
            net(flat.reshape(1, *shape))
        finally:
            for hook in hooks:
                hook.remove()
        return tuple(captured[k].reshape(-1) for k in range(len(modules)))

    # Forward mode costs one pass per pixel, reverse mode one per output: take the cheaper.
    widths = sum(int(np.prod(t.shape)) for t in outputs(torch.zeros(int(np.prod(shape)), dtype=torch.float64)))
    jacobian = jacfwd(outputs) if widths > np.prod(shape) else jacrev(outputs)
    signals = [np.empty((len(images), 28, 28)) for _ in modules]
    for i, image in enumerate(images):
        x = torch.from_numpy(np.asarray(image, dtype=np.float64).reshape(-1))
        for layer, jac in enumerate(jacobian(x)):
            signal, _ = project(x.numpy()[None], spaces(jac.detach().numpy()))
            signals[layer][i] = signal.reshape(28, 28)
    return signals


def pixel_section(name: str, out: str | Path, images: np.ndarray, labels: np.ndarray, *, model=None,
                  layers: tuple[str, ...] | None = None) -> Section:
    """Figure and numbers of :func:`pixel_signals` for one digit of each class (of ``images``)."""
    out = Path(out)
    model = models.load(name) if model is None else model
    layers = PIXEL_LAYERS[name] if layers is None else layers
    chosen = first_of_each_class(labels)[:5]
    digits = images[chosen].reshape(len(chosen), 28, 28)
    signals = pixel_signals(model, layers, images[chosen])
    kept = {layer: [float(np.sum(s[i] ** 2) / max(np.sum(digits[i] ** 2), 1e-300)) for i in range(len(chosen))]
            for layer, s in zip(layers, signals)}
    figure = f"{name}_pixel_layers.png"
    viz.save(viz.pixel_layers(digits, signals, [f"layer {n}" for n in layers], labels[chosen],
                              title=f"{_NAMES.get(name, name)}: what of each digit reaches each layer, in pixels"),
             out / figure)
    section = Section(f"{_NAMES.get(name, name)}: what reaches each layer, mapped back to pixels",
                      summary={"layers": list(layers), "signal_energy_share": kept})
    section.paragraphs.append(
        "How: at each digit, the Jacobian J of a layer's output (before its activation) with respect to the 784 "
        "pixels is computed by automatic differentiation; the digit's signal for that layer is its projection onto "
        "the row space of J (from the SVD of J, rank by numpy's rule), its residual the rest. For the first layer J "
        "is the layer's weight matrix itself; deeper, J composes the layers below, linearised at the digit."
        + (" ResNet18's intermediate layers are left out: their Jacobians (up to 12,544×784 per digit) cost more "
           "than the demo's time allows." if name == "resnet18" else ""))
    section.paragraphs.append(
        "Share of each digit's energy in the signal, per layer: "
        + "; ".join(f"{layer}: {100 * np.median(v):.0f} % (median)" for layer, v in kept.items()) + ".")
    section.figures.append((figure, "Columns: one test digit per class. Rows: the digit, then per layer its signal "
                                    "(grey, the digit's scale) and its residual (red above zero, blue below, one "
                                    "symmetric scale for the figure) with the share of the digit's energy it holds. "
                                    "Look at how the signal thins from layer to layer: deeper layers see fewer "
                                    "directions of the image."))
    return section


def conv_section(name: str, out: str | Path, *, model=None, layer: str = "conv1", vectors: int = 8) -> Section:
    """The first convolution as the paper shows it: its kernels, the top singular vectors of the
    flattened-kernel view (every kernel a row of kh kw numbers) with their share of the energy,
    and which stripe orientations each vector selects (:func:`vsfast.viz.orientation_tuning`)."""
    out = Path(out)
    model = models.load(name) if model is None else model
    conv = model.get_submodule(layer)
    kernel_spaces = analyze(conv, conv_view="kernel")[0].spaces
    figure = f"{name}_{layer}_kernels.png"
    viz.save(viz.conv_kernels(conv.weight, kernel_spaces, vectors=vectors), out / figure)
    kh, kw = conv.kernel_size
    basis = np.asarray(kernel_spaces.signal_rows, dtype=np.float64)[:vectors].reshape(-1, kh, kw)
    s = np.asarray(kernel_spaces.singular_values, dtype=np.float64)
    theta, tuning = viz.orientation_tuning(basis)
    rows = []
    for i, row in enumerate(tuning):
        rows.append({"vector": f"v{i + 1}", "σ": f"{s[i]:.3g}", "energy": f"{100 * s[i] ** 2 / np.sum(s ** 2):.1f} %",
                     "preferred stripes": f"{theta[np.argmax(row)]:.0f}°",
                     "selectivity (1 − min/max)": f"{1 - row.min():.2f}"})
    section = Section(f"{_NAMES.get(name, name)}: the first convolution, {layer}", rows=rows,
                      summary={"kernels": list(conv.weight.shape), "rank": kernel_spaces.rank,
                               "energy_top": [float(v) for v in s[:vectors] ** 2 / np.sum(s ** 2)],
                               "preferred_orientation_deg": [float(theta[np.argmax(r)]) for r in tuning],
                               "selectivity": [float(1 - r.min()) for r in tuning]})
    section.paragraphs.append(
        f"{conv.weight.shape[0]} kernels of {kh}×{kw} pixels. In the flattened-kernel view each kernel is a row of "
        f"{kh * kw} numbers; the SVD of that {conv.weight.shape[0]}×{kh * kw} matrix gives the patterns every kernel "
        f"is a mix of. The top {vectors} carry {100 * np.sum(s[:vectors] ** 2) / np.sum(s ** 2):.0f} % of the "
        "kernels' energy. Orientation: each vector's response to straight stripes of each orientation (the peak of "
        "its Fourier transform along the perpendicular wave vector, over spatial frequencies); the preferred "
        "orientation is the peak, and the selectivity 1 − min/max is 0 for a vector that responds to all "
        "orientations alike and 1 for one that ignores some entirely.")
    section.figures.append((figure, "Top: every kernel of the first convolution (red positive weights, blue "
                                    "negative, each on its own symmetric scale). Middle: the top singular vectors of "
                                    "the flattened-kernel view, with their share of the energy. Bottom: each "
                                    "vector's response (relative to its peak) against stripe orientation in degrees. "
                                    "Look for vectors that are oriented edge or line detectors: a clear single peak."))
    return section


def invert_model(name: str, out: str | Path, images: np.ndarray, labels: np.ndarray, *,
                 references: tuple[str | None, ...] | None = None, max_iter: int | None = None,
                 model=None, progress: bool = False, tol: float = 1e-4) -> Section:
    """Inputs for the paper's per-class targets of one MNIST model (from its outputs on
    ``images``), written as a figure per reference and a JSON of the errors.

    Invertible chains go through the box-constrained pseudoinverse path (inputs in [0, 1]
    nearest the reference; by default the minimum-norm one and the one nearest the class mean);
    other models through the gradient search from the class mean, kept in the box.
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
    section = Section(f"{_NAMES.get(name, name)}: inputs for chosen outputs")
    section.paragraphs.append(
        f"Targets: for each class c, output c at its largest value on the {len(images):,} training digits of class c "
        "and every other output at its smallest on them (the paper's choice). "
        + ("The network is a chain of Linear layers and invertible activations: each input is the image with pixels "
           "in [0, 1] nearest the reference whose outputs are the target, found through the whole chain by "
           "projected Gauss-Newton (vsfast.Chain.solve_box). A target with no such image found gets the exact "
           "preimage nearest to where the search ended, and the figure says how far outside [0, 1] it lies."
           if chain else "The network is not invertible layer by layer: its inputs come from a gradient search in "
                         "the pixel box [0, 1], from the class mean."))
    results = {}
    for reference in references:
        label = reference or "minimum-norm"
        with warnings.catch_warnings():  # the clamps are reported in the section below
            warnings.simplefilter("ignore", RangeWarning)
            result = invert(model, targets, reference=reference, data=(images, labels), max_iter=max_iter,
                            progress=progress, tol=tol)
        through_model = model_outputs(model, result.inputs.astype(np.float32))
        float32_error = np.linalg.norm(through_model - targets, axis=1) / np.linalg.norm(targets, axis=1)
        predicted = through_model.argmax(axis=1)
        violation = np.zeros(len(targets)) if result.violation is None else result.violation
        entry = {
            "method": result.method,
            "box": None if result.box is None else list(result.box),
            "relative_output_error_max": float(result.error.max()),
            "relative_output_error_median": float(np.median(result.error)),
            "relative_output_error_float32_model": float(float32_error.max()),
            "predicted": predicted.tolist(),
            "reached": result.reached.tolist(),
            "feasible": result.feasible.tolist(),
            "box_violation": violation.tolist(),
            "clamped_per_layer": list(result.clamped),
            "iterations": result.iterations.tolist(),
            "distance_to_class_mean": float(np.mean(np.linalg.norm(
                (result.inputs - means).reshape(len(means), -1), axis=1))),
        }
        results[label] = entry
        figure = f"{name}_inverse_{label}.png"
        titles = [f"{c}→{p}" + ("" if v == 0 else f", out {v:.2g}") for c, (p, v) in enumerate(zip(predicted, violation))]
        viz.save(viz.image_grid(result.inputs.reshape(len(targets), 28, 28), titles, size=1.5, limits=(0.0, 1.0),
                                units=viz.PIXEL_UNITS,
                                title=f"{_NAMES.get(name, name)}: inputs for the per-class targets ({label})"),
                 out / figure)
        section.figures.append((figure, f"Reference: {label}. Panel c is an input whose outputs are class c's target; "
                                        "its title reads target class → class the network predicts, and, when no "
                                        "input in [0, 1] was found, how far outside the box the one shown goes "
                                        "(pixels beyond the grey scale saturate). Look for digit shapes: the network's "
                                        "rejected spaces are free, so the reference shows through."))
        feasible = np.flatnonzero(result.feasible)
        infeasible = np.flatnonzero(~result.feasible)
        section.paragraphs.append(
            f"{label}: relative output error at most {entry['relative_output_error_max']:.1e} "
            f"({entry['relative_output_error_float32_model']:.1e} through the float32 model), "
            f"{int(np.sum(predicted == np.arange(len(predicted))))}/{len(predicted)} target classes predicted, "
            f"mean distance to the class-mean image {entry['distance_to_class_mean']:.1f}. "
            + _feasibility(feasible, infeasible, violation, result))
    (out / f"{name}_inverse.json").write_text(json.dumps(results, indent=1) + "\n")
    section.summary = results
    return section


def _feasibility(feasible: np.ndarray, infeasible: np.ndarray, violation: np.ndarray, result) -> str:
    if result.method != "pinv":  # a gradient search stays in the box; short of tol is not infeasible
        return (f"{int(np.sum(result.reached))}/{len(result.reached)} targets reached to a relative output error of "
                f"{result.tol:g} within the iterations allowed.")
    if result.box is None:
        return ""
    box = f"[{result.box[0]:g}, {result.box[1]:g}]"
    if not len(infeasible):
        return f"Every target has an input inside {box} (all feasible)."
    said = (f"Inside {box} (feasible): targets {', '.join(map(str, feasible))}. " if len(feasible)
            else f"No target has an input found inside {box}. ")
    return said + (f"Infeasible as far as the search finds: targets {', '.join(map(str, infeasible))}; "
                   f"the exact preimages returned for them leave the box by {violation[infeasible].min():.2g} to "
                   f"{violation[infeasible].max():.2g} (largest distance of a pixel outside it).")


def _table(report: Report) -> list[dict]:
    rows = []
    for row in report.to_rows():
        cond = row["condition_number"]
        entry = {"layer": row["layer"], "view": row["view"], "shape": f"{row['rows']}×{row['columns']}",
                 "rank": row["rank"], "nullity": row["nullity"], "σ₁/σᵣ": f"{cond:.3g}",
                 f"> {CONDITION_THRESHOLD:g}": "yes" if cond > CONDITION_THRESHOLD else "",
                 "σ₁": f"{row['sigma_max']:.3g}", "stable rank": f"{row['stable_rank']:.3g}",
                 "effective rank": f"{row['effective_rank']:.3g}", "alpha": f"{row['alpha']:.3g}"}
        if "rejected_fraction_median" in row:
            entry["rejected (median)"] = f"{100 * row['rejected_fraction_median']:.1f} %"
        rows.append(entry)
    return rows
