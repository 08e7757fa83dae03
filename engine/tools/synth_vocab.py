"""Write a Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) into GGUF metadata.

This follows llama.cpp's convert_hf_to_gguf.py for byte-level BPE vocabularies
(``TextModel._set_vocab_gpt2``): tokens in id order with ``[PAD{i}]`` filling the gaps up to the
model's vocabulary size, token types NORMAL / CONTROL / USER_DEFINED / UNUSED, the pre-tokenizer
name found by fingerprinting, then merges, special token ids, add_bos/add_eos and the chat
template through ``gguf.SpecialVocab``. Synthetic test models get a real vocabulary this way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import gguf
from tokenizers import Tokenizer as HFTokenizer

from engine.errors import TokenizerError
from engine.tokenizer import PRE_TOKENIZERS

# llama.cpp identifies a pre-tokenizer by the token ids of this text (convert_hf_to_gguf.py).
_FINGERPRINT_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ "
    "🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you "
    "sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)

# sha256 of str(token ids of _FINGERPRINT_TEXT) -> tokenizer.ggml.pre, from convert_hf_to_gguf.py,
# for the pre-tokenizers engine.tokenizer implements.
_FINGERPRINTS = {
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen/Qwen3-Embedding-0.6B
    "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4": "gpt-2",  # evilfreelancer/ruGPT3XL
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # meta-llama/Meta-Llama-3-8B
    "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754": "deepseek-llm",  # deepseek-llm-7b-base
    "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34": "starcoder",  # bigcode/starcoder2-3b
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",  # openai-community/gpt2
    "32d85c31273f8019248f2559fed492d929ea28b17e51d81d3bb36fff23ca72b3": "stablelm2",  # stablelm-2-zephyr-1_6b
    "6221ad2852e85ce96f791f476e0b390cf9b474c9e3d1362f53a24a06dc8220ff": "refact",  # smallcloudai/Refact-1_6-base
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen/Qwen1.5-7B
    "a8594e3edff7c29c003940395316294b2c623e09894deebbc65f33f1515df79e": "dbrx",  # databricks/dbrx-base
    "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": "smaug-bpe",  # Smaug-Llama-3-70B-Instruct
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # HuggingFaceTB/SmolLM-135M
    "d4c8f286ea6b520b3d495c4455483cfa2302c0cfcd4be05d781b6a8a0a7cdaf1": "megrez",  # Infinigence/Megrez-3B-Instruct
    "877081d19cf6996e2c4ff0e1236341e9b7bde288f5311a56a937f0afbbb3aeb5": "deepseek-v3",  # deepseek-ai/DeepSeek-V3
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",  # R1-Distill-Qwen-1.5B
    "b4b8ca1f9769494fbd956ebc4c249de6131fb277a4a3345a7a92c7dd7a55808d": "joyai-llm",  # jdopensource/JoyAI-LLM-Flash
}


def fingerprint_pre_tokenizer(hf: HFTokenizer) -> str:
    """The ``tokenizer.ggml.pre`` name llama.cpp's converter would give this tokenizer.

    Raises TokenizerError when the fingerprint is not one of the supported pre-tokenizers.
    """
    ids = hf.encode(_FINGERPRINT_TEXT).ids  # with the file's own post-processor, as the converter does
    digest = hashlib.sha256(str(ids).encode()).hexdigest()
    if digest not in _FINGERPRINTS:
        raise TokenizerError(
            f"unknown pre-tokenizer fingerprint {digest}; pass pre= explicitly "
            f"(one of {', '.join(sorted(PRE_TOKENIZERS))})."
        )
    return _FINGERPRINTS[digest]


def _looks_special(text: str) -> bool:
    """convert_hf_to_gguf.py's does_token_look_special."""
    return (
        text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (text.startswith("<|") and text.endswith("|>"))
        or (text.startswith("<｜") and text.endswith("｜>"))
        or (text.startswith("<unused") and text.endswith(">"))
    )


def hf_vocab_tokens(hf_dir: Path, vocab_size: int | None = None) -> tuple[list[str], list[int]]:
    """Token texts and GGUF token types, in id order, as convert_hf_to_gguf.py's get_vocab_base."""
    hf = HFTokenizer.from_file(str(hf_dir / "tokenizer.json"))
    vocab = hf.get_vocab(with_added_tokens=True)
    n = vocab_size if vocab_size is not None else len(vocab)
    if max(vocab.values()) >= n:
        raise TokenizerError(
            f"vocab_size {n} is smaller than the tokenizer's largest id {max(vocab.values())}."
        )
    reverse = {i: t for t, i in vocab.items()}
    added = {a.content: a for a in hf.get_added_tokens_decoder().values()}
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[i]
        if token in added:
            # llama.cpp expects CONTROL and USER_DEFINED tokens pre-normalized.
            if not added[token].normalized:
                token = hf.decode(hf.encode(token, add_special_tokens=False).ids, skip_special_tokens=False)
            if added[reverse[i]].special or _looks_special(token):
                types.append(gguf.TokenType.CONTROL)
            else:
                token = token.replace("\u2581", " ")
                types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    return tokens, types


def add_hf_vocab(
    writer: gguf.GGUFWriter, hf_dir: str | Path, *, vocab_size: int | None = None, pre: str | None = None
) -> int:
    """Write the byte-level BPE tokenizer in ``hf_dir`` (tokenizer.json, tokenizer_config.json) to ``writer``.

    vocab_size: the model's embedding rows; ids past the tokenizer's are filled with ``[PAD{i}]``.
    pre: the ``tokenizer.ggml.pre`` to write; by default found by fingerprint like the converter.
    Returns the number of tokens written (the vocabulary size).
    """
    hf_dir = Path(hf_dir)
    tokenizer_json = hf_dir / "tokenizer.json"
    if not tokenizer_json.is_file():
        raise TokenizerError(
            f"{tokenizer_json} not found: a Hugging Face tokenizer folder needs tokenizer.json."
        )
    model = json.loads(tokenizer_json.read_text(encoding="utf-8")).get("model", {})
    if model.get("type") != "BPE":
        raise TokenizerError(
            f"{tokenizer_json} holds a {model.get('type')} model; only byte-level BPE is written."
        )
    if pre is None:
        pre = fingerprint_pre_tokenizer(HFTokenizer.from_file(str(tokenizer_json)))
    tokens, types = hf_vocab_tokens(hf_dir, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(hf_dir, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)
    return len(tokens)


def hf_vocab(hf_dir: str | Path, *, pre: str | None = None) -> Callable[[gguf.GGUFWriter], int]:
    """A vocabulary writer for ``engine.tools.synth.write_synthetic_gguf(..., vocab=hf_vocab(folder))``."""
    return lambda writer: add_hf_vocab(writer, hf_dir, pre=pre)
