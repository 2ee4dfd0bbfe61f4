"""The ``vsfast`` command: any model or checkpoint analysed (``analyze``), large layers timed
against torch (``bench``), and the paper's MNIST networks inverted, trained, and demonstrated.

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
import os
import re
import sys
import traceback
from collections import Counter
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
    checkpoints = [target for kind, target in args.target if kind == "checkpoint"]
    cluster = args.scheduler is not None or args.workers is not None
    if (cluster or len(args.target) > 1) and len(checkpoints) < len(args.target):
        model = next(target for kind, target in args.target if kind != "checkpoint")
        raise ValueError(f"{model}: a model, not a checkpoint; several TARGETs, --scheduler and --workers take "
                         "checkpoints only (analyse a model alone)")
    if cluster:
        return _analyze_on_cluster(args, checkpoints)
    for (kind, target), out in zip(args.target, _outputs(args.out, [target for _, target in args.target])):
        _analyze_target(args, kind, target, out)
    return 0


def _outputs(out: str, targets: list[str]) -> list[Path]:
    """Where each target's analysis goes: --out itself for one target, else a folder in it named
    after each checkpoint (its file's stem, or its directory's name), made unique."""
    if len(targets) == 1:
        return [Path(out)]
    seen: Counter = Counter()
    folders = []
    for target in targets:
        path = Path(target)
        base = path.stem if path.suffix else path.name
        seen[base] += 1
        folders.append(Path(out) / (base if seen[base] == 1 else f"{base}-{seen[base]}"))
    return folders


def _analyze_on_cluster(args: argparse.Namespace, checkpoints: list[str]) -> int:
    """Checkpoints analysed as Dask tasks (vsfast.distributed): on the scheduler at --scheduler,
    or on a LocalCluster of --workers processes; the dashboard's address is logged."""
    for option in ("data", "weights", "device"):
        if getattr(args, option):
            raise ValueError(f"--{option}: not with --scheduler or --workers, which analyse checkpoints on the CPU")
    from .distributed import analyze, connect
    from .report import summary, write_analysis

    with connect(scheduler=args.scheduler, workers=args.workers) as client:
        logging.getLogger("vsfast.cli").info("analysing %d checkpoint(s) on %d Dask workers", len(checkpoints),
                                             len(client.scheduler_info()["workers"]))
        reports = analyze(checkpoints, client=client, method=args.method, k=args.k, conv_view=args.conv_view,
                          progress=args.progress)
    for target, report, out in zip(checkpoints, reports, _outputs(args.out, checkpoints)):
        page = write_analysis(report, out, title=f"vsfast: {target}")
        print(summary(report))
        print(f"report: {page.resolve()}")
    return 0


def _analyze_target(args: argparse.Namespace, kind: str, target: str, out: Path) -> None:
    if kind == "mnist":
        _analyze_mnist(args, target)
        return
    from .analysis import analyze
    from .report import summary, write_analysis

    if kind == "checkpoint" and (args.data or args.weights):
        option = "--data" if args.data else "--weights"
        raise ValueError(f"{option}: {target} is a checkpoint, weights only; name its model to use {option}")
    if kind == "checkpoint":
        model = target
    else:
        from .nn import load_model

        model = load_model(target, weights=args.weights, device=args.device)
    inputs = _inputs_file(args.data) if args.data else None
    report = analyze(model, inputs, method=args.method, k=args.k, conv_view=args.conv_view,
                     params=args.params or "weights", batch_size=args.batch_size or 64,
                     device=args.device if kind == "checkpoint" else None, progress=args.progress)
    page = write_analysis(report, out, title=f"vsfast: {target}")
    print(summary(report))
    print(f"report: {page.resolve()}")


def _inputs_file(path: str):
    """A .npy array of inputs, read without running code (no pickles)."""
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"no inputs file {path}") from None
    except ValueError as exc:
        raise ValueError(f"{path}: not a .npy array of numbers ({exc})") from None


def _analyze_mnist(args: argparse.Namespace, name: str) -> int:
    from .analysis import jsonable
    from .mnist import load
    from .mnist.report import analyze_model
    from .report import write_html

    ignored = [option for option, value in (("--data", args.data), ("--batch-size", args.batch_size),
                                            ("--params", args.params)) if value is not None]
    if ignored:
        raise ValueError(f"{', '.join(ignored)}: not for the MNIST networks, which analyse --inputs test digits")
    args.name = name
    model = _model(args)
    if args.device:
        model = model.to(args.device)
    images, labels = load("test", progress=args.progress)
    report, section = analyze_model(name, args.out, images[:args.inputs], labels[:args.inputs],
                                    method=args.method, k=args.k, conv_view=args.conv_view, model=model,
                                    progress=args.progress)
    out = Path(args.out)
    page = write_html(out / "report.html", f"vsfast: {name} as vector spaces", [section])
    (out / "summary.json").write_text(json.dumps(jsonable({name: report.to_dict()}), indent=1) + "\n")
    (out / "layers.json").write_text(report.to_json(indent=1) + "\n")
    report.to_csv(out / "layers.csv")
    for paragraph in section.paragraphs:
        print(paragraph)
    print(f"report: {page.resolve()}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    rows = bench.run(args.targets, k=args.k, rounds=args.rounds, exact=args.exact, max_shapes=args.max_shapes)
    print(bench.table(rows))
    path = bench.write_json(rows, args.out, command=" ".join(["vsfast", *args.argv]))
    print(f"results: {path.resolve()}")
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


def _target(text: str) -> tuple[str, str]:
    """What ``vsfast analyze`` analyses: (kind, name). A bare word that is no model name, no
    existing path and no import string is a usage error (exit status 2); a path that looks like
    one but is missing, an unknown torchvision model or an import that fails are run-time errors."""
    if text in MODELS:
        return "mnist", text
    if text.startswith("torchvision:"):
        if not re.fullmatch(r"\w+", text.removeprefix("torchvision:")):
            raise argparse.ArgumentTypeError(f"expected torchvision:NAME (e.g. torchvision:vit_b_16), got {text!r}")
        return "torchvision", text
    if Path(text).exists():
        return "checkpoint", text
    if re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", text):
        return "factory", text
    if "/" in text or os.sep in text or Path(text).suffix in (".safetensors", ".pt", ".pth", ".bin", ".json"):
        return "checkpoint", text
    raise argparse.ArgumentTypeError(f"expected {', '.join(MODELS)}, a checkpoint (file or directory), "
                                     f"torchvision:NAME or package.module:factory; got {text!r}")


def _k(text: str) -> int | str:
    return "all" if text == "all" else _count(text)


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
        prog="vsfast", description="Neural-network layers as vector spaces: any model or checkpoint analysed, "
                                   "large layers benchmarked, the paper's MNIST networks inverted and trained.",
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

    analyze = command("analyze", _cmd_analyze, "every weight matrix of a model or checkpoint: spectra, metrics, "
                                               "layers.csv, layers.json, figures, report.html")
    analyze.add_argument("target", type=_target, nargs="+", metavar="TARGET",
                         help=f"{'|'.join(MODELS)} (the paper's MNIST networks), a checkpoint (.safetensors, a "
                              "directory of shards, a .pt/.pth state dict), torchvision:NAME (random weights "
                              "unless --weights) or package.module:factory (a function returning a torch module); "
                              "several checkpoints (a model zoo) go each to its folder under --out")
    analyze.add_argument("--weights", help="a state dict (.safetensors or .pt) for the model (the MNIST networks: "
                                           "a .safetensors file with its card; default: the shipped weights)")
    analyze.add_argument("--out", default="vsfast-analysis", help="output directory (default: %(default)s)")
    analyze.add_argument("--inputs", type=_count, default=1000,
                         help="MNIST networks: test digits to decompose (default: %(default)s)")
    analyze.add_argument("--data", help="other models: a .npy array of inputs (N x the model's input shape)")
    analyze.add_argument("--batch-size", type=_count,
                         help="with --data: inputs run through the model this many at a time (default: 64)")
    analyze.add_argument("--method", choices=["auto", "exact", "randomized"], default="auto")
    analyze.add_argument("--k", type=_k, help="top-k singular values per matrix, or 'all' (default: all up to "
                                             "2048 on the smaller side, the top 256 beyond)")
    analyze.add_argument("--conv-view", choices=["patch", "kernel"], default="patch",
                         help="convolutions as patch maps or as stacks of kernels (default: %(default)s)")
    analyze.add_argument("--params", choices=["weights", "all"],
                         help="models: the weights of known layers (default), or every parameter of 2+ dimensions")
    analyze.add_argument("--device", help="where to compute: cpu (default), cuda, cuda:1, ... (needs torch and "
                                          "vsfast's CUDA module)")
    cluster = analyze.add_mutually_exclusive_group()
    cluster.add_argument("--scheduler", metavar="ADDRESS",
                         help="checkpoints: analyse them on the Dask cluster whose scheduler is at ADDRESS "
                              "(tcp://host:8786, or a scheduler file), one task per tensor; needs vsfast[dask]")
    cluster.add_argument("--workers", type=_count, metavar="N",
                         help="checkpoints: analyse them on a local Dask cluster of N worker processes")

    bench = command("bench", _cmd_bench, "time vsfast against torch.svd_lowrank and torch.linalg.svd on your "
                                         "shapes or checkpoint: a table and a JSON file")
    bench.add_argument("targets", nargs="+", metavar="SHAPE|CHECKPOINT",
                       help="matrix shapes such as 4096x11008 or 32x512x4608 (a batch), or one checkpoint")
    bench.add_argument("--k", type=_count, default=64, help="singular triplets of the randomized SVDs "
                                                           "(default: %(default)s)")
    bench.add_argument("--rounds", type=_count, default=3, help="timed rounds, interleaved (default: %(default)s)")
    bench.add_argument("--exact", choices=["auto", "yes", "no"], default="auto",
                       help="time the exact SVDs too (auto: where the smaller side is at most 2048)")
    bench.add_argument("--max-shapes", type=_count, default=6,
                       help="a checkpoint's largest distinct shapes timed (default: %(default)s)")
    bench.add_argument("--out", default="vsfast-bench.json", help="the JSON file written (default: %(default)s)")

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
    args.argv = list(sys.argv[1:] if argv is None else argv)
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
