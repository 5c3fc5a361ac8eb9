"""``fastckpt`` / ``python -m fastckpt``: the demo and checkpoint tools."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional
from fastckpt import __version__, demo, embedding, show_config
from fastckpt.checkpoint.bundle import BundleReader
from fastckpt.checkpoint.state import latest_checkpoint
from fastckpt.errors import CheckpointError

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    demo.run(workdir=args.workdir, epochs=args.epochs, seed=args.seed)
    return 0


def _resolve_prefix(path: str) -> str:
    import os
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "variables", "variables.index")):
            return os.path.join(path, "variables", "variables")
        latest = latest_checkpoint(path)
        if latest is None:
            raise SystemExit(f"fastckpt: no checkpoint in directory {path}")
        return latest
    return path


def _ls(args: argparse.Namespace) -> int:
    prefix = _resolve_prefix(args.path)
    with BundleReader(prefix) as r:
        rows = []
        for key in sorted(r.keys()):
            dtype = r.dtype(key)
            shape = tuple(r.shape(key))
            rows.append((key, str(dtype), "[" + ",".join(map(str, shape)) + "]", r.info(key)["size"]))
    width = max((len(k) for k, *_ in rows), default=4)
    print(f"{'name':<{width}}  {'dtype':<8} {'shape':<14} {'bytes':>12}")
    for key, dtype, shape, nbytes in rows:
        print(f"{key:<{width}}  {dtype:<8} {shape:<14} {nbytes:>12}")
    print(f"{len(rows)} tensors, {sum(r[3] for r in rows)} bytes in {prefix}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    prefix = _resolve_prefix(args.path)
    try:
        with BundleReader(prefix) as r:
            r.verify()
            n = len(r)
    except CheckpointError as e:
        print(f"FAILED {prefix}: {e}", file=sys.stderr)
        return 1
    print(f"OK {prefix}: {n} tensors, every block and tensor CRC verified")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastckpt", description=__doc__)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--show-config", action="store_true", help="print build configuration")
    for flag, what in (("--cmake-dir", "fastckptConfig.cmake (for -Dfastckpt_DIR=...)"),
                       ("--include-dir", "the C/C++ headers"), ("--lib-dir", "libfastckpt")):
        parser.add_argument(flag, action="store_true", help=f"print the directory of {what} and exit")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("demo", help="train, checkpoint, restore and verify the tutorial model offline")
    p.add_argument("--workdir", default=None, help="where checkpoints go (default: a temp dir)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo)
    p = sub.add_parser("ls", help="list a checkpoint's tensors: names, dtypes, shapes, bytes")
    p.add_argument("path", help="checkpoint prefix, or a directory with a 'checkpoint' file")
    p.set_defaults(func=_ls)
    p = sub.add_parser("verify", help="read every block and tensor of a checkpoint and check every CRC")
    p.add_argument("path", help="checkpoint prefix, or a directory with a 'checkpoint' file")
    p.set_defaults(func=_verify)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        print(__version__)
        return 0
    for name in ("cmake_dir", "include_dir", "lib_dir"):
        if getattr(args, name):
            try:
                print(getattr(embedding, name)())
            except FileNotFoundError as e:
                print(f"fastckpt: {e}", file=sys.stderr)
                return 1
            return 0
    if args.show_config:
        show_config()
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
