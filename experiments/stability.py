"""Stability of the signal spaces against the condition number (the paper's next check 1).

    .venv/bin/python experiments/stability.py [--quick] [--no-write]

Layers of chosen condition number kappa = sigma_1 / sigma_r (1 to 1e8) are perturbed by noise of
known size, and the signal space computed from the noisy layer (``vsfast.spaces``, its top r) is
compared with the true one: the sine of the largest principal angle between them, against Wedin's
bound sin(theta) <= ||E||_2 / (sigma_r - ||E||_2) (Wedin, BIT 12, 1972), valid while
||E||_2 < sigma_r. Two kinds of layer, each rank r with singular values spaced geometrically from
1 to 1/kappa: random (Haar singular vectors, 256 x 128, r = 64) and trained (FCNN-5's 512 x 784
first layer, its own singular vectors, r = 256). The noise E is Gaussian scaled to a spectral norm
eps (sigma_1 = 1), 5 draws each, median. The paper's threshold of 10 is read against this: at
which noise does the computed space stop being the true one (sin(theta) > 0.1, about 6 degrees)?
Writes the stability.py section of docs/experiments.md and docs/figures/stability.png;
``--quick`` (3 condition numbers, 2 draws) is what the test suite runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from publish import add_options, markdown_table, publish  # beside this script

import vsfast

KAPPAS = (1.0, 10.0, 1e2, 1e4, 1e6, 1e8)
NOISE = np.logspace(-10, -1, 10)  # ||E||_2, sigma_1 = 1
UNRELIABLE = 0.1  # sin of the largest principal angle: about 6 degrees


def layer(vectors: tuple[np.ndarray, np.ndarray], r: int, kappa: float) -> np.ndarray:
    u, vt = vectors
    return (u[:, :r] * np.logspace(0, -np.log10(kappa), r)) @ vt[:r]


def random_vectors(rng, m: int, n: int):
    q1, _ = np.linalg.qr(rng.standard_normal((m, m)))
    q2, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return q1, q2.T


def trained_vectors():
    from vsfast.mnist import models

    w = next(p for p in models.load("fcnn5").parameters() if p.ndim == 2).detach().double().numpy()
    u, _, vt = np.linalg.svd(w)
    return u, vt


def largest_sine(a: np.ndarray, b: np.ndarray) -> float:
    """sin of the largest principal angle between the column spans of orthonormal a and b, as
    ||(I - b b^T) a||_2 (accurate for small angles, where 1 - cos^2 is lost to rounding)."""
    return float(np.linalg.norm(a - b @ (b.T @ a), 2))


def measure(vectors, r: int, kappa: float, draws: int, rng) -> np.ndarray:
    """Median sin(theta) at each noise level."""
    w = layer(vectors, r, kappa)
    truth = vectors[1][:r].T
    out = np.empty((len(NOISE), draws))
    for d in range(draws):
        g = rng.standard_normal(w.shape)
        g /= np.linalg.norm(g, 2)
        for i, eps in enumerate(NOISE):
            found = vsfast.spaces(w + eps * g, k=r, method="exact")
            out[i, d] = largest_sine(truth, np.asarray(found.signal))
    return np.median(out, axis=1)


def wedin(kappa: float) -> np.ndarray:
    sigma_r = 1.0 / kappa
    return np.where(NOISE < sigma_r, NOISE / np.maximum(sigma_r - NOISE, 1e-300), np.inf)


def onset(sines: np.ndarray) -> float:
    """The smallest noise at which sin(theta) exceeds UNRELIABLE (inf if none)."""
    above = np.nonzero(sines > UNRELIABLE)[0]
    return float(NOISE[above[0]]) if above.size else float("inf")


def run(kappas, draws: int) -> dict:
    rng = np.random.default_rng(0)
    kinds = {"random 256 × 128, r = 64": (random_vectors(rng, 256, 128), 64),
             "FCNN-5 layer 1, 512 × 784, r = 256": (trained_vectors(), 256)}
    return {name: {kappa: measure(vec, r, kappa, draws, rng) for kappa in kappas}
            for name, (vec, r) in kinds.items()}


def tables(results: dict, draws: int) -> str:
    parts = []
    for name, by_kappa in results.items():
        rows = []
        for kappa, sines in by_kappa.items():
            bound = wedin(kappa)
            held = bool(np.all(sines <= bound * (1 + 1e-6) + 1e-12))
            linear = NOISE * kappa <= 1e-2  # well inside the bound's validity
            slope = np.median(sines[linear] / (NOISE[linear] * kappa)) if np.any(linear) else np.nan
            rows.append([f"{kappa:.0e}", *(f"{s:.1e}" for s in sines), f"{onset(sines):.0e}", f"{slope:.2f}",
                         "yes" if held else "no"])
        parts.append(markdown_table(
            f"{name}: median sin θ over {draws} noise draws, by ‖E‖₂ (σ₁ = 1); onset: the smallest ‖E‖₂ with sin θ > "
            f"{UNRELIABLE}; slope: median sin θ / (‖E‖₂ κ) where ‖E‖₂ κ ≤ 0.01; Wedin: sin θ ≤ ‖E‖₂ / (σ_r − ‖E‖₂) "
            "wherever ‖E‖₂ < σ_r",
            ["κ = σ₁/σ_r", *(f"{e:.0e}" for e in NOISE), "onset", "slope", "within Wedin"], rows))
    return "\n\n".join(parts)


def figure(results: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    for ax, (name, by_kappa) in zip(fig.subplots(1, len(results)), results.items()):
        for kappa, sines in by_kappa.items():
            line, = ax.loglog(NOISE, np.maximum(sines, 1e-17), "o-", ms=3, label=f"κ = {kappa:.0e}")
            bound = wedin(kappa)
            ax.loglog(NOISE[np.isfinite(bound)], bound[np.isfinite(bound)], "--", color=line.get_color(), lw=0.8)
        ax.axhline(UNRELIABLE, color="grey", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("noise ‖E‖₂ (σ₁ = 1)")
        ax.set_ylabel("sin of the largest principal angle")
        ax.set_ylim(1e-17, 2)
        ax.legend(fontsize=6, title="dashed: Wedin's bound", title_fontsize=6)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser, "3 condition numbers, 2 draws")
    args = parser.parse_args()
    kappas, draws = ((1.0, 1e2, 1e6), 2) if args.quick else (KAPPAS, 5)
    results = run(kappas, draws)
    publish(args, "stability.py", tables(results, draws), lambda path: figure(results, path))


if __name__ == "__main__":
    main()
