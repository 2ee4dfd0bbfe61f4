"""``vsfast demo``: the paper's method end to end on MNIST, for its three networks.

Gets the data, loads the shipped FCNN-1, FCNN-5 and ResNet18, and writes figures, tables,
``summary.json`` and ``report.html`` with: the networks' test accuracy beside the paper's; the
four spaces of every layer, with the layers whose condition number exceeds the paper's threshold
flagged; what the first layer keeps and rejects of test digits, and what reaches deeper layers,
mapped back to pixels; ResNet18's first convolution (kernels, the top singular vectors of the
flattened-kernel view, their orientation tuning); and inputs that make each network produce the
paper's per-class target outputs (inside the pixel box [0, 1] through the chain for the two
invertible networks, by gradient search for ResNet18). Progress goes to the ``vsfast`` logger.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from .. import __version__, get_num_threads
from ..analysis import jsonable
from ..report import write_html
from . import data, models
from .report import accuracy_section, analyze_model, conv_section, invert_model, pixel_section

__all__ = ["RESNET_TARGET_IMAGES", "run_demo"]

log = logging.getLogger(__name__)

#: ResNet18's per-class targets are taken over this many training digits (the first ones), not all
#: 60,000: its forward pass over the whole training set alone would take a minute of the demo's
#: three on a 2-core CPU.
RESNET_TARGET_IMAGES = 2000


def run_demo(out: str | Path = "vsfast-demo", count: int = 1000, *, progress: bool = False) -> Path:
    """Run the demo into ``out``; return the path of its ``report.html``.

    Parameters
    ----------
    out
        Output folder (created if needed).
    count
        Test digits to decompose at every layer (at ResNet18's first layer only).
    progress
        Show progress bars (tqdm) for the long steps.
    """
    start = time.perf_counter()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info("MNIST ...")
    test_images, test_labels = data.load("test", progress=progress)
    train_images, train_labels = data.load("train", progress=progress)
    images, labels = test_images[:count], test_labels[:count]

    loaded = {name: models.load(name) for name in models.NAMES}
    summary: dict = {"vsfast": __version__, "threads": get_num_threads(), "steps_s": {}}
    accuracy = accuracy_section(loaded)
    summary["accuracy"] = accuracy.summary
    sections = [accuracy]
    for name, model in loaded.items():
        resnet = name == "resnet18"
        with _step(summary, f"{name}: analysing every layer on {len(images)} test digits"):
            report, section = analyze_model(name, out_dir, images, labels, model=model,
                                            inputs="first" if resnet else "all", progress=progress)
        summary[name] = dict(section.summary)
        for paragraph in section.paragraphs:
            log.info("  %s", paragraph)
        sections.append(section)
        if resnet:
            with _step(summary, f"{name}: the first convolution"):
                conv = conv_section(name, out_dir, model=model)
            summary[name]["conv1"] = conv.summary
            sections.append(conv)
        if name != "fcnn1":  # FCNN-1 has one layer: its decomposition above says it all
            with _step(summary, f"{name}: deeper layers mapped back to pixels"):
                pixels = pixel_section(name, out_dir, images, labels, model=model)
            summary[name]["pixels"] = pixels.summary
            sections.append(pixels)
        with _step(summary, f"{name}: inputs for the per-class targets"):
            train = slice(0, RESNET_TARGET_IMAGES if resnet else None)
            inverse = invert_model(name, out_dir, train_images[train], train_labels[train], model=model,
                                   progress=progress, **(dict(tol=1e-2, max_iter=150) if resnet else {}))
        summary[name]["inverse"] = inverse.summary
        for paragraph in inverse.paragraphs[1:]:
            log.info("  %s", paragraph)
        sections.append(inverse)

    page = write_html(out_dir / "report.html", "vsfast: the paper's MNIST networks as vector spaces", sections,
                      intro="Every layer is a linear map: its SVD gives the signal and rejected spaces of its "
                            "input and output; inputs split into what a layer keeps and what it rejects, and "
                            "chosen outputs are traced back to images that produce them.")
    summary["wall_time_s"] = round(time.perf_counter() - start, 2)
    (out_dir / "summary.json").write_text(json.dumps(jsonable(summary), indent=2) + "\n")
    log.info("done in %s s", summary["wall_time_s"])
    return page


class _step:
    """Logs a step and records its wall time in summary["steps_s"]."""

    def __init__(self, summary: dict, what: str):
        self.summary, self.what = summary, what

    def __enter__(self):
        log.info("%s ...", self.what)
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.summary["steps_s"][self.what] = round(time.perf_counter() - self.start, 2)
        return False
