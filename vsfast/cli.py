"""The ``vsfast`` command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_demo(args: argparse.Namespace) -> int:
    from vsfast.demo import run_demo

    return run_demo(out=args.out, full=args.full)


def _cmd_analyze(args: argparse.Namespace) -> int:
    from vsfast import data
    from vsfast.analysis import jsonable
    from vsfast.report import analyze_model, write_html

    images, labels = data.mnist("test")
    report, section = analyze_model(args.name, args.out, images[:args.inputs], labels[:args.inputs],
                                    method=args.method, k=args.k, conv_view=args.conv_view, progress=True)
    page = write_html(Path(args.out) / "report.html", f"vsfast: {args.name} as vector spaces", [section])
    (Path(args.out) / "summary.json").write_text(json.dumps(jsonable({args.name: report.to_dict()}), indent=1) + "\n")
    for paragraph in section.paragraphs:
        print(paragraph)
    print(f"report: {page.resolve()}")
    return 0


def _cmd_invert(args: argparse.Namespace) -> int:
    from vsfast import data
    from vsfast.report import invert_model, write_html

    images, labels = data.mnist("train")
    references = None if args.reference is None else tuple(None if r == "none" else r for r in args.reference)
    section = invert_model(args.name, args.out, images, labels, references=references, max_iter=args.max_iter,
                           progress=True)
    page = write_html(Path(args.out) / "report.html", f"vsfast: inputs for chosen outputs of {args.name}", [section])
    for paragraph in section.paragraphs:
        print(paragraph)
    print(f"report: {page.resolve()}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from vsfast.models import train

    _, card = train(args.name, out=args.out, epochs=args.epochs, seed=args.seed, limit=args.limit,
                    data_root=args.data)
    print(f"{args.name}: test accuracy {100 * card['test_accuracy']:.2f} % on {card['test_images']} "
          f"images, {card['wall_time_s']:.0f} s; wrote {card['path']} and its card")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vsfast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the end-to-end example and write its report")
    demo.add_argument("--out", default="vsfast-demo", help="output directory (default: %(default)s)")
    demo.add_argument("--full", action="store_true", help="also include ResNet18")
    demo.set_defaults(func=_cmd_demo)

    analyze = sub.add_parser("analyze", help="the spaces of every layer of an MNIST network: figures, tables, "
                                             "report.html")
    analyze.add_argument("name", choices=["fcnn1", "fcnn5", "resnet18"], help="which network")
    analyze.add_argument("--out", default="vsfast-analysis", help="output directory (default: %(default)s)")
    analyze.add_argument("--inputs", type=int, default=1000, help="test digits to decompose (default: %(default)s)")
    analyze.add_argument("--method", choices=["auto", "exact", "randomized"], default="auto")
    analyze.add_argument("--k", type=int, help="top-k singular triplets per layer (default: all)")
    analyze.add_argument("--conv-view", choices=["patch", "kernel"], default="patch",
                         help="convolutions as patch maps or as stacks of kernels (default: %(default)s)")
    analyze.set_defaults(func=_cmd_analyze)

    invert = sub.add_parser("invert", help="inputs that make an MNIST network produce the paper's per-class targets")
    invert.add_argument("name", choices=["fcnn1", "fcnn5", "resnet18"], help="which network")
    invert.add_argument("--out", default="vsfast-inverse", help="output directory (default: %(default)s)")
    invert.add_argument("--reference", action="append", choices=["none", "class-mean", "nearest"],
                        help="reference image(s), repeatable (default: none and class-mean for invertible chains, "
                             "class-mean otherwise)")
    invert.add_argument("--max-iter", type=int, default=200, help="optimiser iterations at most (default: %(default)s)")
    invert.set_defaults(func=_cmd_invert)

    train = sub.add_parser("train", help="train an MNIST network and write its weights and card")
    train.add_argument("name", choices=["fcnn1", "fcnn5", "resnet18"], help="which network")
    train.add_argument("--out", help="output directory (default: the user cache, ~/.cache/vsfast/models)")
    train.add_argument("--epochs", type=int, help="number of epochs (default: the network's recipe)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    train.add_argument("--limit", type=int, help="train on the first N training images only (quick checks)")
    train.add_argument("--data", help="MNIST folder (default: $VSFAST_DATA or the user cache)")
    train.set_defaults(func=_cmd_train)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from vsfast.data import DataError

    try:
        return args.func(args)
    except (ValueError, DataError, OSError) as exc:  # bad input or files: a message, not a traceback
        print(f"vsfast {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
