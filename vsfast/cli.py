"""The ``vsfast`` command: the paper's MNIST networks analysed, inverted, trained, and the demo.

Exit status: 0 on success, 1 when the run fails (one line ``vsfast: error: ...`` on stderr; the
traceback too with ``-v``), 2 for a usage error. Progress goes through the ``vsfast`` logger,
which the command prints to stderr (``-q``: warnings only, ``-v``: everything); the results
(paths written, measured figures) go to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import traceback
from pathlib import Path

from . import __version__

MODELS = ("fcnn1", "fcnn5", "resnet18")


def _cmd_demo(args: argparse.Namespace) -> int:
    from .mnist.demo import run_demo

    page = run_demo(out=args.out, progress=args.progress)
    print(f"report: {page.resolve()}")
    return 0


def _model(args: argparse.Namespace):
    """The network the command names, loaded before the data so that a bad weights file fails fast."""
    from .mnist import models

    return models.load(args.name, weights=args.weights)


def _cmd_analyze(args: argparse.Namespace) -> int:
    from .analysis import jsonable
    from .mnist import load
    from .mnist.report import analyze_model
    from .report import write_html

    model = _model(args)
    images, labels = load("test", progress=args.progress)
    report, section = analyze_model(args.name, args.out, images[:args.inputs], labels[:args.inputs],
                                    method=args.method, k=args.k, conv_view=args.conv_view, model=model,
                                    progress=args.progress)
    page = write_html(Path(args.out) / "report.html", f"vsfast: {args.name} as vector spaces", [section])
    (Path(args.out) / "summary.json").write_text(json.dumps(jsonable({args.name: report.to_dict()}), indent=1) + "\n")
    for paragraph in section.paragraphs:
        print(paragraph)
    print(f"report: {page.resolve()}")
    return 0


def _cmd_invert(args: argparse.Namespace) -> int:
    from .mnist import load
    from .mnist.report import invert_model
    from .report import write_html

    model = _model(args)
    images, labels = load("train", progress=args.progress)
    references = None if args.reference is None else tuple(None if r == "none" else r for r in args.reference)
    section = invert_model(args.name, args.out, images, labels, references=references, max_iter=args.max_iter,
                           model=model, progress=args.progress)
    page = write_html(Path(args.out) / "report.html", f"vsfast: inputs for chosen outputs of {args.name}", [section])
    for paragraph in section.paragraphs:
        print(paragraph)
    print(f"report: {page.resolve()}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .mnist.models import train

    _, card = train(args.name, out=args.out, epochs=args.epochs, seed=args.seed, limit=args.limit,
                    data_root=args.data, progress=args.progress, storage_dtype=args.dtype)
    print(f"{args.name}: test accuracy {100 * card['test_accuracy']:.2f} % on {card['test_images']} "
          f"images, {card['wall_time_s']:.0f} s; wrote {card['path']} and its card")
    return 0


def _count(text: str) -> int:
    """A positive integer option: a bad value is a usage error (exit status 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _common_options(parser: argparse.ArgumentParser, default) -> None:
    """-q and -v, accepted before and after the command (``default=SUPPRESS`` in the commands, so
    that an option given before the command is not reset by the command's own default)."""
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="print warnings and errors only, no progress")
    parser.add_argument("-v", "--verbose", "--debug", action="store_true", default=default, dest="verbose",
                        help="print debug messages, and the traceback of an error")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vsfast", description="The paper's MNIST networks as vector spaces: analysed, inverted, trained.",
        epilog="Exit status: 0 success, 1 failure (one line on stderr; -v adds the traceback), 2 usage error.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _common_options(parser, False)
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, help: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help, description=help, parents=[common])
        cmd.set_defaults(func=func)
        return cmd

    demo = command("demo", _cmd_demo, "the paper end to end on MNIST (FCNN-1, FCNN-5, ResNet18): write its report")
    demo.add_argument("--out", default="vsfast-demo", help="output directory (default: %(default)s)")

    analyze = command("analyze", _cmd_analyze, "the spaces of every layer of an MNIST network: figures, tables, "
                                               "report.html")
    analyze.add_argument("name", choices=MODELS, help="which network")
    analyze.add_argument("--weights", help="a .safetensors file with its card (default: the shipped weights)")
    analyze.add_argument("--out", default="vsfast-analysis", help="output directory (default: %(default)s)")
    analyze.add_argument("--inputs", type=_count, default=1000, help="test digits to decompose (default: %(default)s)")
    analyze.add_argument("--method", choices=["auto", "exact", "randomized"], default="auto")
    analyze.add_argument("--k", type=_count, help="top-k singular triplets per layer (default: all)")
    analyze.add_argument("--conv-view", choices=["patch", "kernel"], default="patch",
                         help="convolutions as patch maps or as stacks of kernels (default: %(default)s)")

    invert = command("invert", _cmd_invert, "inputs that make an MNIST network produce the paper's per-class targets")
    invert.add_argument("name", choices=MODELS, help="which network")
    invert.add_argument("--weights", help="a .safetensors file with its card (default: the shipped weights)")
    invert.add_argument("--out", default="vsfast-inverse", help="output directory (default: %(default)s)")
    invert.add_argument("--reference", action="append", choices=["none", "class-mean", "nearest", "nearest-output"],
                        help="reference image(s), repeatable (default: none and class-mean for invertible chains, "
                             "class-mean otherwise)")
    invert.add_argument("--max-iter", type=_count,
                        help="iterations at most (default: 30 Gauss-Newton steps for invertible chains, 500 "
                             "optimiser steps otherwise)")

    train = command("train", _cmd_train, "train an MNIST network and write its weights and card")
    train.add_argument("name", choices=MODELS, help="which network")
    train.add_argument("--out", help="output directory (default: the user cache, e.g. ~/.cache/vsfast/models)")
    train.add_argument("--epochs", type=_count, help="number of epochs (default: the network's recipe)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    train.add_argument("--limit", type=_count, help="train on the first N training images only (quick checks)")
    train.add_argument("--data", help="MNIST folder (default: $VSFAST_DATA or the user cache)")
    train.add_argument("--dtype", choices=["float16", "bfloat16"],
                       help="store the weights in this dtype, with the test accuracy measured from them "
                            "(the shipped ResNet18: float16)")
    return parser


@contextlib.contextmanager
def _logging(args: argparse.Namespace):
    """The ``vsfast`` logger printed to stderr at the chosen level, for the length of one command;
    progress bars, when shown, keep their line below the messages."""
    logger = logging.getLogger("vsfast")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s"))
    level = logger.level
    logger.setLevel(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    logger.addHandler(handler)
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm
    except ImportError:
        logging_redirect_tqdm = None
    try:
        with logging_redirect_tqdm(loggers=[logger]) if logging_redirect_tqdm else contextlib.nullcontext():
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _one_line(exc: BaseException) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    # The documented errors (bad input, files, data, missing extras) say what went wrong; anything
    # else also needs its type to be understood.
    documented = isinstance(exc, (ValueError, OSError, ImportError, RuntimeError))
    return text if documented and text else f"{type(exc).__name__}: {text}"


def main(argv: list[str] | None = None) -> int:
    """Run the command with ``argv`` (default: the process's arguments); return the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help or --version (0), a usage error (2): argparse has said why
        return exc.code if isinstance(exc.code, int) else 2
    args.progress = not args.quiet and sys.stderr.isatty()
    with _logging(args):
        try:
            return args.func(args)
        except KeyboardInterrupt:
            print("vsfast: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:
            if args.verbose:
                traceback.print_exc()
            print(f"vsfast: error: {_one_line(exc)}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
