"""``vsfast demo``: the paper's method end to end on MNIST.

Gets the data, loads (or trains) FCNN-1 and FCNN-5 (and ResNet18 with ``full``), analyses the
four spaces of every layer and what each layer rejects of 1,000 test digits, computes inputs that
make each network produce the paper's per-class target outputs (exactly, by the chained
pseudoinverse, for the two invertible networks; by gradient search for ResNet18), and writes
figures, tables, ``summary.json`` and ``report.html``. Progress goes to the ``vsfast`` logger.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from .. import __version__, get_num_threads
from ..analysis import jsonable
from ..report import write_html
from . import data
from .report import analyze_model, invert_model

__all__ = ["run_demo"]

log = logging.getLogger(__name__)


def run_demo(out: str | Path = "vsfast-demo", full: bool = False, count: int = 1000, *,
             progress: bool = False) -> Path:
    """Run the demo into ``out``; return the path of its ``report.html``.

    Parameters
    ----------
    out
        Output folder (created if needed).
    full
        Also ResNet18 (trained on first use, about 5 minutes on a 2-core CPU).
    count
        Test digits to decompose at every layer.
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

    summary: dict = {"vsfast": __version__, "threads": get_num_threads()}
    sections = []
    for name in ("fcnn1", "fcnn5", "resnet18") if full else ("fcnn1", "fcnn5"):
        log.info("%s: analysing every layer on %d test digits ...", name, len(images))
        report, section = analyze_model(name, out_dir, images, labels, progress=progress)
        summary[name] = dict(section.summary)
        for paragraph in section.paragraphs:
            log.info("  %s", paragraph)
        for row in report.to_rows():
            log.info("  %18s %5d x %-5d rank %5d  nullity %5d  condition %9.3g  rejects %5.1f %%", row["layer"],
                     row["rows"], row["columns"], row["rank"], row["nullity"], row["condition_number"],
                     100 * row["rejected_fraction_median"])
        log.info("%s: inputs for the per-class targets ...", name)
        inverse = invert_model(name, out_dir, train_images, train_labels, progress=progress)
        summary[name]["inverse"] = inverse.summary
        for paragraph in inverse.paragraphs[1:]:
            log.info("  %s", paragraph)
        sections += [section, inverse]

    page = write_html(out_dir / "report.html", "vsfast: MNIST networks as vector spaces", sections,
                      intro="Every layer is a linear map: its SVD gives the signal and rejected spaces of its "
                            "input and output; inputs split into what a layer keeps and what it rejects.")
    summary["wall_time_s"] = round(time.perf_counter() - start, 2)
    (out_dir / "summary.json").write_text(json.dumps(jsonable(summary), indent=2) + "\n")
    log.info("done in %s s", summary["wall_time_s"])
    return page
