"""What every experiment script shares: its command-line options for where it writes, and the
writing of its section of docs/experiments.md and its figure (benchmarks/common.py's section
writer, so a rerun replaces its own section and nothing else)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import markdown_table, run_header, write_section  # noqa: E402

__all__ = ["add_options", "markdown_table", "publish"]

DOCS = Path(__file__).resolve().parents[1] / "docs"


def add_options(parser, quick: str) -> None:
    """--quick (``quick`` says what the reduced run is), --no-write and --docs."""
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    parser.add_argument("--docs", type=Path, default=DOCS, help="where experiments.md and figures/ are")


def publish(args, script: str, body: str, draw: Callable[[Path], None]) -> None:
    """Print the script's tables under the run's header and, unless --no-write, make them its
    section of experiments.md and ``draw`` its figure, figures/<script's stem>.png."""
    text = f"{run_header(' '.join([f'experiments/{script}', *sys.argv[1:]]))}\n\n{body}"
    print(text)
    if args.no_write:
        return
    write_section(args.docs / "experiments.md", script, text)
    (args.docs / "figures").mkdir(exist_ok=True)
    draw(args.docs / "figures" / f"{Path(script).stem}.png")
    print(f"\nwrote the {script} section of {args.docs / 'experiments.md'} and its figure")
