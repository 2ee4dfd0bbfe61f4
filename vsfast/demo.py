"""``vsfast demo``: the paper's method end to end on MNIST.

For FCNN-1 and FCNN-5 (and ResNet18's first convolution with ``--full``): the four spaces of every
linear layer and how much of each test digit the first layer rejects; for FCNN-1, inputs that make
the network produce the paper's per-class target outputs, computed exactly by the pseudoinverse,
minimum-norm and with each class's mean image filling the rejected space. Writes
``summary.json`` and a figure of the computed inputs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

import vsfast
from vsfast import data, nn as vnn


def _layer_rows(model) -> list[dict]:
    import torch

    rows = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            sp = vsfast.spaces(module.weight.detach().double())
            rows.append({"layer": name, "shape": list(sp.shape), "rank": sp.rank, "nullity": sp.nullity,
                         "condition_number": sp.condition_number, "sigma_max": float(sp.singular_values[0])})
    return rows


def _rejected_energy(weight, images: np.ndarray) -> dict:
    """Fraction of each image's energy in the first layer's rejected space."""
    sp = vsfast.spaces(weight.detach().double())
    x = images.reshape(len(images), -1).astype(np.float64)
    _, residual = vsfast.project(x, sp)
    frac = np.sum(residual**2, axis=1) / np.sum(x**2, axis=1)
    return {"median": float(np.median(frac)), "min": float(frac.min()), "max": float(frac.max())}


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


def _resnet_first_conv(resnet) -> dict:
    """The paper's kernel view of ResNet18's first convolution: every 7x7 kernel as a row."""
    w = resnet.conv1.weight.detach().double()
    kernels = w.reshape(-1, w.shape[-2] * w.shape[-1])
    sp = vsfast.spaces(kernels)
    return {"shape": list(sp.shape), "rank": sp.rank, "condition_number": sp.condition_number,
            "energy_in_top_3": float(np.sum(sp.singular_values[:3] ** 2) / np.sum(sp.singular_values**2))}


def _save_figure(images: np.ndarray, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 10, figsize=(12, 1.6))
    for c, ax in enumerate(axes):
        ax.imshow(images[c].reshape(28, 28), cmap="gray")
        ax.set_title(str(c))
        ax.axis("off")
    fig.suptitle("FCNN-1: inputs whose outputs are the per-class targets (class-mean reference)")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return True


def run_demo(out: str = "vsfast-demo", full: bool = False) -> int:
    from vsfast import models

    start = time.perf_counter()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    print("MNIST ...", flush=True)
    test_images, test_labels = data.mnist("test")
    train_images, train_labels = data.mnist("train")

    summary: dict = {"vsfast": vsfast.__version__, "threads": vsfast.get_num_threads()}
    for name in ("fcnn1", "fcnn5"):
        model = models.load(name)
        first = next(m for m in model.modules() if m.__class__.__name__ == "Linear")
        summary[name] = {
            "test_accuracy": model.card["test_accuracy"],
            "layers": _layer_rows(model),
            "first_layer_rejected_energy": _rejected_energy(first.weight, test_images),
        }
        print(f"{name}: test accuracy {100 * model.card['test_accuracy']:.2f} %, first layer rejects a median "
              f"{100 * summary[name]['first_layer_rejected_energy']['median']:.1f} % of a test digit's energy")
        for row in summary[name]["layers"]:
            print(f"  {row['layer']:>3} {row['shape'][0]:4d} x {row['shape'][1]:<4d} rank {row['rank']:4d}  "
                  f"nullity {row['nullity']:4d}  condition {row['condition_number']:.3g}")
    summary["fcnn1"]["inverse"], images = _invert(models.load("fcnn1"), train_images, train_labels)
    for label, inv in summary["fcnn1"]["inverse"].items():
        print(f"fcnn1 inverse, {label.replace('_', ' ')}: per-class targets reproduced to a relative error of "
              f"{inv['relative_output_error_float64']:.1e}; predicted classes {inv['predicted']}; mean distance "
              f"to the class-mean image {inv['distance_to_class_mean']:.2f}")
    if full:
        summary["resnet18_conv1_kernels"] = _resnet_first_conv(models.load("resnet18"))
        print(f"resnet18 conv1 kernels: {summary['resnet18_conv1_kernels']}")
    if _save_figure(images, out_dir / "fcnn1_inverse.png"):
        summary["figure"] = "fcnn1_inverse.png"
    summary["wall_time_s"] = round(time.perf_counter() - start, 2)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out_dir.resolve() / 'summary.json'} ({summary['wall_time_s']} s)")
    return 0
