"""The `moebox` command line."""

from __future__ import annotations

import argparse
import sys

from engine import __version__
from engine.errors import MoeboxError


def _cmd_doctor(args: argparse.Namespace) -> int:
    from engine.doctor import print_report

    print_report()
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from engine.inspect import print_inspect

    print_inspect(args.model)
    return 0


def _cmd_bench_kernels(args: argparse.Namespace) -> int:
    from engine.bench_kernels import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moebox", description="Run giant Mixture-of-Experts models from GGUF files."
    )
    parser.add_argument("--version", action="version", version=f"moebox {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("doctor", help="show CPU features, RAM, GPU and torch/CUDA versions")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser("inspect", help="describe a GGUF model: config, tokenizer, tensor groups")
    p.add_argument("model", help="a .gguf file, the first part of a split set, or a directory")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("bench", help="benchmarks that print figures")
    bench = p.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    from engine.bench_kernels import add_arguments as add_bench_kernels_arguments

    q = bench.add_parser(
        "kernels", help="native CPU kernels: GEMV GB/s per format vs memory read, MoE timings"
    )
    add_bench_kernels_arguments(q)
    q.set_defaults(func=_cmd_bench_kernels)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MoeboxError as exc:
        print(f"moebox: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
