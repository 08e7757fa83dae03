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


def _cmd_synth(args: argparse.Namespace) -> int:
    from engine.synth import write_synthetic_gguf

    overrides = {"n_layers": args.layers} if args.layers else {}
    vocab = None
    if args.tokenizer:
        from engine.synth_vocab import hf_vocab

        vocab = hf_vocab(args.tokenizer)
    path = write_synthetic_gguf(
        args.output,
        args.shape,
        qtype=args.qtype,
        vocab=vocab,
        seed=args.seed,
        split_max_size=int(args.split_gb * 2**30),
        progress=True,
        **overrides,
    )
    print(f"wrote {path}")
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

    from engine.synth import SHAPES

    p = sub.add_parser(
        "synth", help="write a random-weight model GGUF of a named shape (for tests and benchmarks)"
    )
    p.add_argument("shape", choices=sorted(SHAPES), help="model shape")
    p.add_argument("output", help="output .gguf path")
    p.add_argument(
        "--qtype", default="Q4_K", help="quant type of the matrices (F32, F16, Q8_0, Q4_K, IQ1_S, ...)"
    )
    p.add_argument("--layers", type=int, default=0, help="number of layers (default: the shape's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--tokenizer",
        help="a Hugging Face tokenizer folder (tokenizer.json, tokenizer_config.json) to use as the "
        "vocabulary (default: a 256-byte vocabulary)",
    )
    p.add_argument(
        "--split-gb", type=float, default=0, help="write a split set of parts of at most this many GiB"
    )
    p.set_defaults(func=_cmd_synth)

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
