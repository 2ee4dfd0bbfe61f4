"""``vsfast demo``: the paper's method end to end on MNIST.

Gets the data, loads (or trains) FCNN-1 and FCNN-5 (and ResNet18 with ``--full``), analyses the
four spaces of every layer and what each layer rejects of 1,000 test digits, computes inputs that
make each network produce the paper's per-class target outputs (exactly, by the chained
pseudoinverse, for the two invertible networks; by gradient search for ResNet18), and writes
figures, tables, ``summary.json`` and ``report.html``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import vsfast
from vsfast import data
from vsfast.analysis import jsonable
from vsfast.report import analyze_model, invert_model, write_html


def run_demo(out: str = "vsfast-demo", full: bool = False, count: int = 1000) -> int:
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
        summary[name] = dict(section.summary)
        for paragraph in section.paragraphs:
            print(f"  {paragraph}")
        for row in report.to_rows():
            print(f"  {row['layer']:>18} {row['rows']:5d} x {row['columns']:<5d} rank {row['rank']:5d}  "
                  f"nullity {row['nullity']:5d}  condition {row['condition_number']:9.3g}  "
                  f"rejects {100 * row['rejected_fraction_median']:5.1f} %")
        print(f"{name}: inputs for the per-class targets ...", flush=True)
        inverse = invert_model(name, out_dir, train_images, train_labels, progress=True)
        summary[name]["inverse"] = inverse.summary
        for paragraph in inverse.paragraphs[1:]:
            print(f"  {paragraph}")
        sections += [section, inverse]

    page = write_html(out_dir / "report.html", "vsfast: MNIST networks as vector spaces", sections,
                      intro="Every layer is a linear map: its SVD gives the signal and rejected spaces of its "
                            "input and output; inputs split into what a layer keeps and what it rejects.")
    summary["wall_time_s"] = round(time.perf_counter() - start, 2)
    (out_dir / "summary.json").write_text(json.dumps(jsonable(summary), indent=2) + "\n")
    print(f"report: {page.resolve()} ({summary['wall_time_s']} s)")
    return 0
