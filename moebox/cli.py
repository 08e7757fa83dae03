"""The `moebox` command line."""

from __future__ import annotations

import argparse
import os
import sys

from engine import __version__
from engine.errors import MoeboxError


def _cmd_doctor(args: argparse.Namespace) -> int:
    from engine.tools.doctor import print_report

    print_report(args.model)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from engine.tools.inspect import print_inspect, print_plan

    if args.plan:
        fits = print_plan(
            _model_path(args.model),
            rules=_placement_rules(args),
            context=args.ctx_size,
            vram_gib=args.vram,
            ram_gib=args.ram,
            kv_cache_dtype=args.kv_cache_dtype,
        )
        return 0 if fits else 1
    print_inspect(_model_path(args.model))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    # The gateway depends on the engine, never the other way: import it only here.
    from engine.config import model_config
    from engine.default_model import embedded_model_path
    from engine.gguf_file import open_gguf
    from gateway.server import serve
    from gateway.settings import GatewaySettings

    settings = GatewaySettings(
        model_name=args.model_name,
        api_key=args.api_key or os.environ.get("MOEBOX_API_KEY") or None,
        reasoning_format=args.reasoning_format,
        cors_origins=tuple(args.cors_origin or ()),
        max_tokens_limit=args.max_tokens_limit,
        n_predict=args.n_predict,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repeat_penalty=args.repeat_penalty,
        max_running=args.max_running,
        max_waiting=args.max_waiting,
        prefill_chunk=args.prefill_chunk,
    )
    model = args.model or embedded_model_path()
    # Headers only (milliseconds): a wrong path, a broken file or an unsupported model
    # fails here with its message, before the port opens; the weights load in the background.
    rules = _placement_rules(args)
    with open_gguf(model) as gguf:
        config = model_config(gguf)
        # so is a placement rule that cannot run or a plan that does not fit the GPU
        from engine.plan import machine_memory, plan_memory

        plan = plan_memory(
            gguf,
            config,
            rules=rules,
            memory=machine_memory(),
            context=args.ctx_size,
            kv_cache_dtype=args.kv_cache_dtype,
        )
        plan.raise_if_unfit()
    serve(
        model,
        settings,
        host=args.host,
        port=args.port,
        threads=args.threads,
        context_length=args.ctx_size,
        kv_cache_dtype=args.kv_cache_dtype,
        placement=rules,
    )
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from engine.tools.synth import write_synthetic_gguf

    overrides = {"n_layers": args.layers} if args.layers else {}
    vocab = None
    if args.tokenizer:
        from engine.tools.synth_vocab import hf_vocab

        vocab = hf_vocab(args.tokenizer)
    path = write_synthetic_gguf(
        args.output,
        args.shape,
        qtype=args.qtype,
        vocab=vocab,
        seed=args.seed,
        split_max_size=int(args.split_gb * 2**30),
        sparse=args.sparse,
        progress=True,
        **overrides,
    )
    print(f"wrote {path}")
    return 0


def _model_path(model: str | None) -> str:
    if model:
        return model
    from engine.default_model import embedded_model_path

    return str(embedded_model_path())


def _cmd_chat(args: argparse.Namespace) -> int:
    import logging

    from engine.llm import LLM
    from engine.sampling_params import sampling_with_defaults
    from moebox.chat import chat

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    llm = LLM.from_gguf(
        _model_path(args.model),
        threads=args.threads,
        context_length=args.context,
        kv_cache_dtype=args.kv_cache_dtype,
        placement=_placement_rules(args),
    )
    params = sampling_with_defaults(
        {**llm.sampling_defaults, **_sampling_flags(args)}, max_tokens=args.max_new_tokens, seed=args.seed
    )
    chat(llm, params=params, system=args.system, force_think=args.force_think)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from engine.tools.bench import run_bench

    run_bench(
        _model_path(args.model),
        prompt_tokens=args.prompt_tokens,
        gen_tokens=args.gen_tokens,
        threads=args.threads,
        repeat=args.repeat,
        llama_cpp=not args.no_llama_cpp,
        kv_cache_dtype=args.kv_cache_dtype,
        placement=_placement_rules(args),
    )
    return 0


def _cmd_bench_serve(args: argparse.Namespace) -> int:
    from engine.tools.bench_serve import run_bench_serve

    run_bench_serve(
        _model_path(args.model),
        streams=args.streams,
        prompt_tokens=args.prompt_tokens,
        gen_tokens=args.gen_tokens,
        prefill_chunk=args.prefill_chunk,
        threads=args.threads,
        repeat=args.repeat,
        kv_cache_dtype=args.kv_cache_dtype,
        placement=_placement_rules(args),
        llama_cpp=not args.no_llama_cpp,
    )
    return 0


def _cmd_bench_kernels(args: argparse.Namespace) -> int:
    from engine.tools.bench_kernels import run

    return run(args)


# engine.kv_cache.KV_CACHE_DTYPES holds the dtypes; named here so that --help needs no torch
KV_CACHE_DTYPE_NAMES = ("auto", "f16", "bf16", "f32")


def _add_kv_cache_dtype(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kv-cache-dtype",
        choices=KV_CACHE_DTYPE_NAMES,
        default="auto",
        help="how the KV cache stores keys and values; auto (default): f16 on a GPU, as llama.cpp "
        "(half the memory of f32), f32 in RAM (faster decode with the CPU attention)",
    )


def _add_sampling(p: argparse.ArgumentParser) -> None:
    """Sampling for what a request does not name, with llama.cpp's flag names."""
    g = p.add_argument_group(
        "sampling",
        "defaults for requests that do not set them; unset flags take the GGUF's recommended "
        "sampling (general.sampling.*) when the file has it, else llama-server's defaults "
        "(temperature 0.8, top-k 40, top-p 0.95, min-p 0.05). DeepSeek recommends --temp 0.6 --top-p "
        "0.95 for R1.",
    )
    g.add_argument("--temp", "--temperature", dest="temperature", type=float, help="temperature (0: greedy)")
    g.add_argument("--top-k", type=int, help="keep the k most likely tokens (0: no cut)")
    g.add_argument("--top-p", type=float, help="keep the most likely tokens up to this probability mass")
    g.add_argument(
        "--min-p", type=float, help="drop tokens below this fraction of the best one's probability"
    )
    g.add_argument("--repeat-penalty", type=float, help="penalty for repeated tokens (1: none)")


def _sampling_flags(args: argparse.Namespace) -> dict[str, float]:
    flags = {
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "min_p": args.min_p,
        "repetition_penalty": args.repeat_penalty,
    }
    return {k: v for k, v in flags.items() if v is not None}


class _PlacementFlag(argparse.Action):
    """-ot / --cpu-moe / --n-cpu-moe into one list in command-line order: the first rule that
    matches a tensor wins, as in llama.cpp."""

    def __call__(self, parser, namespace, values, option_string=None):
        flags = list(getattr(namespace, self.dest) or [])
        flags.append((option_string, values if isinstance(values, str) else None))
        setattr(namespace, self.dest, flags)


def _add_placement(p: argparse.ArgumentParser) -> None:
    """Where tensors go, as llama.cpp spells it; without these flags the routed experts of the last
    MoE layers go to the GPU as far as they fit, the rest stay in RAM (moebox inspect MODEL --plan)."""
    g = p.add_argument_group(
        "placement", "(before the preset; `moebox inspect MODEL --plan` shows the result)"
    )
    g.add_argument(
        "-ot",
        "--override-tensor",
        dest="placement",
        action=_PlacementFlag,
        metavar="REGEX=DEVICE,...",
        help="tensors whose name the regex matches go to DEVICE: CPU (RAM, native kernels) or CUDA0 "
        "(the GPU, GGUF blocks in VRAM); repeatable, comma-separated lists too; the first match wins. "
        r"E.g. -ot exps=CPU, -ot 'blk\.(5[0-9]|60)\.ffn_.*_exps=CUDA0'",
    )
    g.add_argument(
        "-cmoe",
        "--cpu-moe",
        dest="placement",
        action=_PlacementFlag,
        nargs=0,
        help="every routed expert in RAM",
    )
    g.add_argument(
        "-ncmoe",
        "--n-cpu-moe",
        dest="placement",
        action=_PlacementFlag,
        metavar="N",
        help="routed experts of the first N layers (blk.0 to blk.N-1) in RAM, the others on the GPU",
    )


def _placement_rules(args: argparse.Namespace) -> list:
    from engine.placement import user_rules

    return user_rules(getattr(args, "placement", None) or [])


_EXAMPLES = """examples:
  moebox chat                                  chat with the embedded model in the terminal
  moebox serve models/DeepSeek-R1-UD-IQ1_S --temp 0.6 --top-p 0.95
                                               OpenAI and Ollama APIs on http://127.0.0.1:8080
  moebox inspect MODEL --plan --vram 24        what goes to the GPU and RAM, and whether it fits
  moebox doctor MODEL                          what this machine lacks for MODEL, and what to do
  moebox bench model MODEL                     prefill and decode tok/s beside llama.cpp

`moebox COMMAND --help` describes each command."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moebox",
        description="Run giant Mixture-of-Experts models (DeepSeek-R1/V3 and kin) from GGUF files: "
        "attention and dense layers on the GPU, routed experts in RAM on the CPU. MODEL is a .gguf "
        "file, the first part of a split set or a directory; without one, the embedded "
        "SmolLM2-135M-Instruct.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"moebox {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "doctor",
        help="what this machine offers (CPU features, RAM, GPU, torch/CUDA) and, in plain words, what is "
        "missing and what to do",
    )
    p.add_argument("model", nargs="?", help="also check that RAM holds this GGUF model's routed experts")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser("inspect", help="describe a GGUF model: config, tokenizer, tensor groups")
    p.add_argument(
        "model", nargs="?", help="a .gguf file, split set or directory (default: the embedded SmolLM2)"
    )
    p.add_argument(
        "--plan",
        action="store_true",
        help="where each tensor group would go (device, format, MiB), the KV cache and the VRAM/RAM "
        "totals, from the headers alone; exit status 1 when it does not fit",
    )
    p.add_argument(
        "--ctx-size", "--ctx", type=int, help="plan for this context (default: the model's, or what fits)"
    )
    p.add_argument("--vram", type=float, metavar="GiB", help="plan for a GPU with this much free (0: none)")
    p.add_argument(
        "--ram", type=float, metavar="GiB", help="plan for this much RAM (default: this machine's)"
    )
    _add_kv_cache_dtype(p)
    _add_placement(p)
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("serve", help="serve a model over OpenAI- and Ollama-compatible HTTP APIs")
    p.add_argument(
        "model", nargs="?", help="a .gguf file, split set or directory (default: the embedded SmolLM2)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    p.add_argument(
        "--api-key", help="require `Authorization: Bearer KEY` (default: $MOEBOX_API_KEY, else none)"
    )
    p.add_argument(
        "--model-name",
        default="moebox",
        help="model id that /v1/models lists and requests name (default: moebox; the GGUF's own name "
        "is accepted too)",
    )
    p.add_argument(
        "--reasoning-format",
        choices=("deepseek", "none"),
        default="deepseek",
        help="deepseek: <think> text goes to reasoning_content; none: it stays in content",
    )
    p.add_argument(
        "--cors-origin", action="append", help="allow browser calls from this origin (repeatable; * for any)"
    )
    p.add_argument("--threads", type=int, help="CPU threads (default: physical cores)")
    p.add_argument(
        "-c",
        "--ctx-size",
        type=int,
        help="tokens of KV cache shared by all requests, as llama-server counts it (one request may use "
        "all of it; default: the model's context, or what fits the GPU)",
    )
    p.add_argument(
        "-n",
        "--n-predict",
        type=int,
        default=4096,
        help="tokens generated at most for a request that sets no max_tokens (default 4096)",
    )
    p.add_argument(
        "--max-tokens-limit", type=int, help="cap on generated tokens per request, even if it asks for more"
    )
    p.add_argument(
        "-np",
        "--parallel",
        "--max-running",
        dest="max_running",
        type=int,
        default=32,
        help="requests generated at once, batched in each step (default 32)",
    )
    p.add_argument(
        "--prefill-chunk",
        type=int,
        default=256,
        help="prompt tokens per step and request, so running streams keep their pace (default 256)",
    )
    p.add_argument("--max-waiting", type=int, default=64, help="queued requests before 429 (default 64)")
    _add_kv_cache_dtype(p)
    _add_sampling(p)
    _add_placement(p)
    p.set_defaults(func=_cmd_serve)

    from engine.tools.synth import MIXES, SHAPES

    p = sub.add_parser(
        "synth", help="write a random-weight model GGUF of a named shape (for tests and benchmarks)"
    )
    p.add_argument("shape", choices=sorted(SHAPES), help="model shape")
    p.add_argument("output", help="output .gguf path")
    p.add_argument(
        "--qtype",
        default="Q4_K",
        help="quant type of the matrices (F32, F16, Q8_0, Q4_K, IQ1_S, ...) or the per-tensor types "
        f"of a published file ({', '.join(MIXES)}; e.g. deepseek-r1 --qtype UD-Q2_K_XL)",
    )
    p.add_argument(
        "--sparse",
        action="store_true",
        help="write headers and metadata only, the tensor data a hole of its full size (no disk "
        "used): a file to plan with (inspect --plan), not to run",
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

    p = sub.add_parser("chat", help="chat with a model in the terminal (streaming, with history)")
    p.add_argument("model", nargs="?", help="GGUF model (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--max-new-tokens", type=int, default=1024, help="tokens per answer at most")
    p.add_argument(
        "--force-think", action="store_true", help="open the reasoning block (<think>) for R1-style models"
    )
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: random)")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: physical cores)")
    p.add_argument("--context", type=int, default=None, help="context length (default: the model's)")
    _add_kv_cache_dtype(p)
    _add_sampling(p)
    _add_placement(p)
    p.set_defaults(func=_cmd_chat)

    p = sub.add_parser("bench", help="benchmarks that print figures")
    bench = p.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    from engine.tools.bench_kernels import add_arguments as add_bench_kernels_arguments

    q = bench.add_parser(
        "kernels", help="native CPU kernels: GEMV GB/s per format vs memory read, MoE timings"
    )
    add_bench_kernels_arguments(q)
    q.set_defaults(func=_cmd_bench_kernels)

    q = bench.add_parser(
        "model", help="prefill and decode tok/s of a GGUF model, beside llama.cpp on the same file"
    )
    q.add_argument("model", nargs="?", help="GGUF model (default: the embedded SmolLM2-135M-Instruct)")
    q.add_argument("-p", "--prompt-tokens", type=int, nargs="+", default=[128], help="prompt lengths")
    q.add_argument("-n", "--gen-tokens", type=int, default=64, help="tokens to decode")
    q.add_argument("-r", "--repeat", type=int, default=3, help="runs per test (best is reported)")
    q.add_argument("--threads", type=int, default=None, help="CPU threads for both (default: physical cores)")
    q.add_argument("--no-llama-cpp", action="store_true", help="skip llama.cpp")
    _add_kv_cache_dtype(q)
    _add_placement(q)
    q.set_defaults(func=_cmd_bench)

    from engine.tools.bench_serve import add_arguments as add_bench_serve_arguments

    q = bench.add_parser(
        "serve",
        help="many requests at once through the scheduler: aggregate decode tok/s and time to first "
        "token at each concurrency",
    )
    add_bench_serve_arguments(q)
    _add_kv_cache_dtype(q)
    _add_placement(q)
    q.set_defaults(func=_cmd_bench_serve)
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
