"""``fastckpt`` / ``python -m fastckpt``: the demo and checkpoint tools."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from fastckpt import demo
    demo.run(workdir=args.workdir, epochs=args.epochs, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastckpt", description=__doc__)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--show-config", action="store_true", help="print build configuration")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("demo", help="train, checkpoint, restore and verify the tutorial model offline")
    p.add_argument("--workdir", default=None, help="where checkpoints go (default: a temp dir)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from fastckpt import __version__
        print(__version__)
        return 0
    if args.show_config:
        from fastckpt import show_config
        show_config()
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
