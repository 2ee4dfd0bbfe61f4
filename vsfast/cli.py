"""The ``vsfast`` command."""

from __future__ import annotations

import argparse
import sys


def _cmd_demo(args: argparse.Namespace) -> int:
    from vsfast.demo import run_demo

    return run_demo(out=args.out, full=args.full)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vsfast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the end-to-end example and write its report")
    demo.add_argument("--out", default="vsfast-demo", help="output directory (default: %(default)s)")
    demo.add_argument("--full", action="store_true", help="also include ResNet18")
    demo.set_defaults(func=_cmd_demo)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
