"""Streaming detokenization: no broken characters, and the deltas add up to decode()."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.detokenizer import IncrementalDetokenizer
from engine.tokenizer import Tokenizer

MULTIBYTE = "naïve café — 我想在apple工作 🚀😶\u200d🌫️🦙 👩‍👩‍👧‍👦 한국어 Ελληνικά e\u0301 \u3000 ～"


@pytest.fixture(scope="module", params=["smollm2", "deepseek-r1", "qwen-3", "sentencepiece"])
def tok(request, smollm2_path, vocab_gguf, spm_vocab, metadata_of) -> Tokenizer:
    if request.param == "smollm2":
        path = smollm2_path
    elif request.param == "sentencepiece":
        path = spm_vocab[1]
    else:
        path = vocab_gguf(request.param, "qwen2" if request.param == "qwen-3" else "llama")
    return Tokenizer.from_gguf_metadata(metadata_of(path))


def stream(tok: Tokenizer, ids: list[int], skip_special: bool = False) -> list[str]:
    detok = IncrementalDetokenizer(tok, skip_special=skip_special)
    deltas = [detok.add(i) for i in ids]
    deltas.append(detok.flush())
    assert "".join(deltas) == detok.text
    return deltas


def test_characters_split_over_tokens_are_held_back(tok):
    ids = tok.encode(MULTIBYTE, add_special=False)
    # The vocabulary really does cut characters: some token alone is not valid UTF-8.
    assert any("\ufffd" in tok.decode([i]) for i in ids), "the text should split a character over tokens"
    deltas = stream(tok, ids)
    assert "" in deltas[:-1]  # some token completed no character and was held back
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == tok.decode(ids) == MULTIBYTE


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Control characters and planes past U+3FFFF are left out: SmolLM2's vocabulary has no token for
# some of their bytes, and llama.cpp drops such bytes too (see test_tokenizer's EDGE_TEXTS).
@given(
    text=st.text(alphabet=st.characters(exclude_categories=("Cs", "Cc"), max_codepoint=0x3FFFF), max_size=60)
)
def test_valid_text_never_yields_replacement_characters(tok, text):
    ids = tok.encode(text, add_special=False, parse_special=False)
    deltas = stream(tok, ids)
    assert "".join(deltas) == tok.decode(ids) == text
    # Every delta is whole characters of the text: the running output is always a prefix of it.
    shown = ""
    for d in deltas:
        shown += d
        assert text.startswith(shown)


@pytest.mark.parametrize("seed", range(20))
def test_random_ids_add_up_to_decode(tok, seed):
    rng = random.Random(seed)
    # Random ids, biased towards byte-sized tokens so that many characters are cut.
    byte_ids = [
        i for i in range(tok.vocab_size) if len(tok.token_bytes(i)) == 1 and tok.token_bytes(i)[0] >= 0x80
    ]
    ids = [rng.choice(byte_ids) if rng.random() < 0.5 else rng.randrange(tok.vocab_size) for _ in range(200)]
    for skip in (False, True):
        deltas = stream(tok, ids, skip_special=skip)
        assert "".join(deltas) == tok.decode(ids, skip_special=skip)


def test_special_tokens(tok):
    text = "hi" + tok.token_text(tok.eos_id) + "there"
    ids = tok.encode(text, add_special=False)
    assert "".join(stream(tok, ids)) == tok.decode(ids)
    assert "".join(stream(tok, ids, skip_special=True)) == tok.decode(ids, skip_special=True)
    if tok.model == "gpt2":
        assert tok.decode(ids) == text
        assert tok.decode(ids, skip_special=True) == "hithere"
    else:  # SentencePiece puts a space in front of text that follows a special token (as llama.cpp)
        assert tok.decode(ids) == "hi</s> there"
