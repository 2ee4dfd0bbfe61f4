"""Feature importance from the signal spaces against gradient x input (the paper's open question 3).

    .venv/bin/python experiments/feature_importance.py [--digits 1000] [--quick] [--no-write]

For the paper's FCNN-1 and FCNN-5 and test digits, three rankings of the pixels for the predicted
class: the signal attribution (``vsfast.signal_attribution``: the gradient times the part of the
digit that the first layer keeps), gradient x input, and a random order. Deletion curves: the
top-ranked pixels (most positive evidence first) are set to 0, the background, in steps of the
image, and the accuracy on the true labels is measured after each; the faster it falls, the more
the ranking found what the decision rests on (the area under the curve, lower is better; random
removal is the floor to beat). Also reported: how much of each digit lies in the first layer's
rejected space, which only the signal attribution leaves out. Writes the feature_importance.py
section of docs/experiments.md and docs/figures/feature_importance.png; ``--quick`` (200 digits,
FCNN-5) is what the test suite runs. Needs the MNIST test set.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from publish import add_options, markdown_table, publish  # beside this script

import vsfast
from vsfast.mnist import load, models

FRACTIONS = np.array([0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5])


def gradient_times_input(model, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(xr).gather(1, target[:, None]).sum(), xr)
    return grad * x


def deletion_curve(model, x: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor) -> np.ndarray:
    """Accuracy after zeroing the top FRACTIONS of each digit's pixels by score."""
    order = scores.flatten(1).argsort(1, descending=True)
    n = order.shape[1]
    out = []
    for f in FRACTIONS:
        kept = x.flatten(1).clone()
        kept.scatter_(1, order[:, : int(round(f * n))], 0.0)
        with torch.no_grad():
            out.append(float((model(kept.reshape(x.shape)).argmax(1) == labels).float().mean()))
    return np.array(out)


def area(curve: np.ndarray) -> float:
    return float(np.sum((curve[1:] + curve[:-1]) / 2 * np.diff(FRACTIONS)) / (FRACTIONS[-1] - FRACTIONS[0]))


def rejected_share(model, x: torch.Tensor) -> np.ndarray:
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    flat = x.flatten(1).double()
    rest = vsfast.project(flat, vsfast.spaces(first.weight.detach().double())).residual
    return ((rest**2).sum(1) / (flat**2).sum(1)).numpy()


def run(name: str, x: torch.Tensor, labels: torch.Tensor) -> dict:
    model = models.load(name).eval()
    with torch.no_grad():
        target = model(x).argmax(1)
    generator = torch.Generator().manual_seed(0)
    rankings = {"signal attribution": vsfast.signal_attribution(model, x, target),
                "gradient × input": gradient_times_input(model, x, target),
                "random": torch.rand(x.shape, generator=generator)}
    return {"name": name, "curves": {k: deletion_curve(model, x, labels, v) for k, v in rankings.items()},
            "rejected": rejected_share(model, x)}


def table(results: list[dict], digits: int) -> str:
    rows = []
    for r in results:
        for method, curve in r["curves"].items():
            rows.append([r["name"], method, *(f"{a:.3f}" for a in curve), f"{area(curve):.3f}"])
    return markdown_table(
        f"Accuracy on {digits} test digits after zeroing the top-ranked share of each digit's pixels (for the "
        "predicted class); area: under the curve over 0–50 %, lower is better",
        ["model", "ranking", *(f"{f:.0%}" for f in FRACTIONS), "area"], rows)


def figure(results: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    fig = Figure(figsize=(4.5 * len(results), 3.4), layout="constrained")
    for ax, r in zip(fig.subplots(1, len(results), squeeze=False)[0], results):
        for method, curve in r["curves"].items():
            ax.plot(100 * FRACTIONS, 100 * curve, "o-", ms=3, label=f"{method} (area {area(curve):.3f})")
        ax.set_title(f"{r['name']}: deletion curves")
        ax.set_xlabel("pixels removed, most important first (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", type=int, default=1000)
    add_options(parser, "200 digits, FCNN-5 only")
    args = parser.parse_args()
    digits, names = (200, ("fcnn5",)) if args.quick else (args.digits, ("fcnn1", "fcnn5"))
    images, labels = load("test")
    x, y = torch.from_numpy(images[:digits]), torch.from_numpy(labels[:digits]).long()
    results = [run(name, x, y) for name in names]
    shares = "; ".join(f"{r['name']} {np.median(r['rejected']):.2f} ({np.min(r['rejected']):.2f}–"
                       f"{np.max(r['rejected']):.2f})" for r in results)
    body = (f"{table(results, digits)}\n\nShare of a digit's ‖x‖² in the first layer's rejected space (median, "
            f"min–max): {shares}.")
    publish(args, "feature_importance.py", body, lambda path: figure(results, path))


if __name__ == "__main__":
    main()
