"""``vsfast demo``: the paper's method end to end on MNIST.

Gets the data, loads (or trains) FCNN-1 and FCNN-5 (and ResNet18 with ``--full``), analyses the
four spaces of every layer and what each layer rejects of 1,000 test digits, computes inputs that
make FCNN-1 produce the paper's per-class target outputs (exactly, by the pseudoinverse), and
writes figures, tables, ``summary.json`` and ``report.html``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

import vsfast
from vsfast import data, nn as vnn
from vsfast.analysis import jsonable
from vsfast.report import Section, analyze_model, write_html


def paper_targets(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per class c: the largest output c over training images of class c, and for every other
    output the smallest it takes on those images (the paper's choice of targets)."""
    targets = np.empty((10, logits.shape[1]))
    for c in range(10):
        own = logits[labels == c]
        targets[c] = own.min(axis=0)
        targets[c, c] = own[:, c].max()
    return targets


def _invert(model, train_images, train_labels) -> tuple[dict, np.ndarray]:
    """Inputs for the paper's per-class targets, through the model's chain of layers."""
    import torch

    with torch.no_grad():
        logits = model(torch.from_numpy(train_images)).double().numpy()
    targets = paper_targets(logits, train_labels)
    class_means = np.stack([train_images[train_labels == c].reshape(-1, 784).mean(axis=0) for c in range(10)])
    chain = vsfast.Chain(vnn.chain_layers(model, dtype=torch.float64))
    result = {}
    for label, reference in (("minimum_norm", None), ("class_mean_reference", class_means)):
        x, clamped = chain.reconstruct(targets, reference=reference)
        with torch.no_grad():
            out = model(torch.from_numpy(x).reshape(10, 1, 28, 28).float()).double().numpy()
        result[label] = {
            "relative_output_error_float64": float(np.max(np.linalg.norm(chain.forward(x) - targets, axis=1)
                                                          / np.linalg.norm(targets, axis=1))),
            "relative_output_error_torch_float32": float(np.max(np.linalg.norm(out - targets, axis=1)
                                                                / np.linalg.norm(targets, axis=1))),
            "predicted": out.argmax(axis=1).tolist(),
            "clamped_per_layer": list(clamped),
            "distance_to_class_mean": float(np.mean(np.linalg.norm(x - class_means, axis=1))),
        }
    return result, x


def _inverse_section(inverse: dict, figure: str) -> Section:
    section = Section("fcnn1: inputs for chosen outputs")
    for label, inv in inverse.items():
        section.paragraphs.append(
            f"{label.replace('_', ' ')}: the per-class targets are reproduced to a relative error of "
            f"{inv['relative_output_error_float64']:.1e} (float64 chain), "
            f"{inv['relative_output_error_torch_float32']:.1e} through the float32 model, which predicts "
            f"{sum(p == c for c, p in enumerate(inv['predicted']))}/10 target classes; mean distance to the "
            f"class-mean image {inv['distance_to_class_mean']:.2f}.")
    section.figures.append((figure, "Inputs whose FCNN-1 outputs are each class's target (class-mean reference)."))
    return section


def run_demo(out: str = "vsfast-demo", full: bool = False, count: int = 1000) -> int:
    from vsfast import models, viz

    start = time.perf_counter()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    print("MNIST ...", flush=True)
    test_images, test_labels = data.mnist("test")
    train_images, train_labels = data.mnist("train")
    images, labels = test_images[:count], test_labels[:count]

    summary: dict = {"vsfast": vsfast.__version__, "threads": vsfast.get_num_threads()}
    sections = []
    for name in ("fcnn1", "fcnn5", "resnet18") if full else ("fcnn1", "fcnn5"):
        print(f"{name}: analysing every layer on {len(images)} test digits ...", flush=True)
        report, section = analyze_model(name, out_dir, images, labels, progress=True)
        sections.append(section)
        summary[name] = dict(section.summary)
        for paragraph in section.paragraphs:
            print(f"  {paragraph}")
        for row in report.to_rows():
            print(f"  {row['layer']:>18} {row['rows']:5d} x {row['columns']:<5d} rank {row['rank']:5d}  "
                  f"nullity {row['nullity']:5d}  condition {row['condition_number']:9.3g}  "
                  f"rejects {100 * row['rejected_fraction_median']:5.1f} %")

    print("fcnn1: inputs for the per-class targets ...", flush=True)
    summary["fcnn1"]["inverse"], inverse_images = _invert(models.load("fcnn1"), train_images, train_labels)
    viz.save(viz.image_grid(inverse_images.reshape(-1, 28, 28), [str(c) for c in range(10)],
                            title="FCNN-1: inputs for the per-class targets (class-mean reference)"),
             out_dir / "fcnn1_inverse.png")
    sections.append(_inverse_section(summary["fcnn1"]["inverse"], "fcnn1_inverse.png"))
    for paragraph in sections[-1].paragraphs:
        print(f"  {paragraph}")

    page = write_html(out_dir / "report.html", "vsfast: MNIST networks as vector spaces", sections,
                      intro="Every layer is a linear map: its SVD gives the signal and rejected spaces of its "
                            "input and output; inputs split into what a layer keeps and what it rejects.")
    summary["wall_time_s"] = round(time.perf_counter() - start, 2)
    (out_dir / "summary.json").write_text(json.dumps(jsonable(summary), indent=2) + "\n")
    print(f"report: {page.resolve()} ({summary['wall_time_s']} s)")
    return 0
