"""Tokenizer built from a GGUF file's metadata alone, giving the same token ids as llama.cpp.

Two vocabulary kinds are supported, named by ``tokenizer.ggml.model``:

- ``gpt2``: byte-level BPE. The text is cut by the pre-tokenizer regexes that llama.cpp
  (src/llama-vocab.cpp) picks from ``tokenizer.ggml.pre``, applied one after the other like
  llama.cpp's ``unicode_regex_split`` (each regex splits every piece left by the previous one,
  keeping both matches and the text between them), then merged by BPE rank.
- ``llama``: SentencePiece BPE. Spaces become ``▁``, a space is put in front of the text and after
  every special token (``tokenizer.ggml.add_space_prefix``, default on), pieces are merged by
  score, characters outside the vocabulary fall back to ``<0xXX>`` byte tokens.

The merging itself runs in the Hugging Face ``tokenizers`` library. Special tokens (token type
CONTROL, USER_DEFINED or UNKNOWN) are cut out of the text first, the way llama.cpp's
``tokenizer_st_partition`` does it, so BPE never splits them. llama.cpp's corrections by token
text are applied too: end-of-turn tokens such as ``<|im_end|>`` or ``</s>`` become CONTROL tokens
and end generation whatever the file says.

Where this still differs from llama.cpp: characters assigned only in recent Unicode versions may
be classed differently by the regex engines (oniguruma here); ``decode`` does not apply llama.cpp's
``clean_up_tokenization_spaces`` pass, so that decoding gives back the encoded text exactly;
fill-in-the-middle markers do not end generation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gguf import TokenType
from tokenizers import Regex, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.models import BPE

from engine.errors import TokenizerError

# Pre-tokenizer regexes, copied from llama.cpp's llm_tokenizer_bpe (src/llama-vocab.cpp). Non-ASCII
# characters are written as escapes: some (e.g. U+1F7D) would change under Unicode normalization of
# the source and break the ranges.
_DEFAULT = (
    "[\\p{P}\\$\\+<=>\\^~\\|]+",
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
    "\\p{N}+",
    "[0-9][0-9][0-9]",
)
_GPT2 = ("'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",)
_LLAMA3 = (
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
)
_QWEN2 = (
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
)
_DEEPSEEK_LLM = (
    "[\r\n]",
    (
        "\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-"
        "\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1"
        "\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd"
        "\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d"
        "\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-"
        "\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4"
        "\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d"
        "\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4"
        "\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e"
        "\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f"
        "\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2"
        "\U000118a0-\U000118df\U0001e900-\U0001e943]+"
    ),
    "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
    "\\s+$",
    "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
    "\\p{N}+",
)
_DEEPSEEK3_LLM = (
    "\\p{N}{1,3}",
    "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
)
_STARCODER = (
    "\\p{N}",
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
)


@dataclass(frozen=True)
class PreTokenizer:
    """How llama.cpp cuts text before BPE for one value of ``tokenizer.ggml.pre``."""

    regexes: tuple[str, ...]
    # A whole pre-tokenized word found in the vocabulary is taken as one token, skipping merges.
    ignore_merges: bool = False


# tokenizer.ggml.pre value -> pre-tokenizer, as llama.cpp's llama_vocab::impl::load maps them.
PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "default": PreTokenizer(_DEFAULT),
    "llama-bpe": PreTokenizer(_LLAMA3, ignore_merges=True),
    "llama3": PreTokenizer(_LLAMA3, ignore_merges=True),
    "llama-v3": PreTokenizer(_LLAMA3, ignore_merges=True),
    "dbrx": PreTokenizer(_LLAMA3),
    "smaug-bpe": PreTokenizer(_LLAMA3),
    "qwen2": PreTokenizer(_QWEN2),
    "deepseek-r1-qwen": PreTokenizer(_QWEN2),
    "megrez": PreTokenizer(_QWEN2),
    "stablelm2": PreTokenizer(_QWEN2),
    "deepseek-llm": PreTokenizer(_DEEPSEEK_LLM),
    "deepseek-v3": PreTokenizer(_DEEPSEEK3_LLM),
    "joyai-llm": PreTokenizer(_DEEPSEEK3_LLM),
    "smollm": PreTokenizer(_STARCODER),
    "starcoder": PreTokenizer(_STARCODER),
    "refact": PreTokenizer(_STARCODER),
    "gpt-2": PreTokenizer(_GPT2),
}

# Token texts llama.cpp treats as end of generation whatever the file says, and so also as
# CONTROL tokens (llama_vocab::impl::load in llama-vocab.cpp). Fill-in-the-middle pad/repo/file
# markers, which llama.cpp also stops on, are left out: a chat server should not stop on them.
_END_OF_GENERATION_TEXTS = frozenset(
    {
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<|return|>",
        "<|call|>",
        "<|flush|>",
        "<|calls|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "</s>",
        "<|eom_id|>",
        "<EOT>",
        "_<EOT>",
        "[EOT]",
        "[EOS]",
        "<|end_of_text|>",
        "<end_of_utterance>",
        "<eos>",
        "<turn|>",
        "<|tool_response>",
        "<｜end▁of▁sentence｜>",
        "[e~[",
    }
)
# Fill-in-the-middle markers llama.cpp recognises by text and makes CONTROL tokens.
_FIM_TEXTS = frozenset(
    {
        *("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>"),
        *("<|code_prefix|>", "<|prefix|>", "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>"),
        *("<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>", "<|fim_middle|>"),
        *("<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>"),
        *("<|middle|>", "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", "<|fim_repo|>"),
        *("<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>"),
    }
)
# gpt-oss channel markers, which llama.cpp always renders (USER_DEFINED).
_ALWAYS_RENDERED_TEXTS = frozenset({"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"})


def _llama_cpp_token_types(texts: Sequence[str], types: list[int]) -> tuple[list[int], set[int]]:
    """Token types after llama.cpp's by-text corrections, and its end-of-generation ids (less FIM)."""
    end = set()
    for i, text in enumerate(texts):
        if text in _END_OF_GENERATION_TEXTS:
            end.add(i)
        if text in _END_OF_GENERATION_TEXTS or text in _FIM_TEXTS:
            types[i] = int(TokenType.CONTROL)
        elif text in _ALWAYS_RENDERED_TEXTS:
            types[i] = int(TokenType.USER_DEFINED)
    by_text = {texts[i]: i for i in end}
    if "<|end|>" in by_text and (
        {"<|return|>", "<|call|>"} <= by_text.keys() or {"<|calls|>", "<|flush|>"} <= by_text.keys()
    ):
        # gpt-oss / solar-open: <|end|> ends a message, not the generation.
        end.discard(by_text["<|end|>"])
        types[by_text["<|end|>"]] = int(TokenType.USER_DEFINED)
    if "</s>" in by_text and ({"<|tool_response>", "<|plamo:eos|>"} & set(texts)):
        # gemma4 and plamo have a normal </s>.
        end.discard(by_text["</s>"])
        types[by_text["</s>"]] = int(TokenType.NORMAL)
    return types, end


_SPECIAL_TYPES = (TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNKNOWN)
_SPACE_MARK = "\u2581"  # SentencePiece's visible space "▁"


def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in character for each byte, reversed: char -> byte."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


BYTE_DECODER = _byte_level_decoder()
# str.translate table to the Latin-1 character of each byte, so that .encode("latin-1") gives the bytes.
# Latin-1 characters outside GPT-2's alphabet map to a character Latin-1 cannot encode, so that
# they take the slow path below instead of passing as one byte.
_TO_LATIN1 = {cp: "\uffff" for cp in range(0x80, 0x100)} | {ord(c): b for c, b in BYTE_DECODER.items()}


class Tokenizer:
    """Text <-> token ids for one GGUF vocabulary; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        model: str,
        tokens: Sequence[str],
        token_types: Sequence[int],
        merges: Sequence[str] = (),
        scores: Sequence[float] = (),
        pre: str = "default",
        bos_id: int | None = None,
        eos_id: int | None = None,
        eot_id: int | None = None,
        eom_id: int | None = None,
        unk_id: int | None = None,
        pad_id: int | None = None,
        add_bos: bool = False,
        add_eos: bool = False,
        add_space_prefix: bool = True,
    ) -> None:
        if model not in ("gpt2", "llama"):
            raise TokenizerError(
                f"tokenizer.ggml.model is {model!r}; moebox reads 'gpt2' (byte-level BPE) and "
                "'llama' (SentencePiece) vocabularies. Use a GGUF of a model with one of those."
            )
        if model == "gpt2" and pre not in PRE_TOKENIZERS:
            raise TokenizerError(
                f"tokenizer.ggml.pre is {pre!r}, a pre-tokenizer moebox does not know. "
                f"Supported: {', '.join(sorted(PRE_TOKENIZERS))}."
            )
        if not tokens:
            raise TokenizerError("tokenizer.ggml.tokens is empty: the GGUF carries no vocabulary.")
        self.model = model
        self.pre = pre
        # llama.cpp names empty tokens so that every id has a distinct text.
        self._texts = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
        n = len(self._texts)
        types = list(token_types) if token_types else [int(TokenType.NORMAL)] * n
        if len(types) < n:
            raise TokenizerError(f"tokenizer.ggml.token_type has {len(types)} entries for {n} tokens.")
        self._types = types[:n]
        self._types, end_by_text = _llama_cpp_token_types(self._texts, self._types)

        def valid(token_id: int | None) -> int | None:
            return token_id if token_id is not None and 0 <= token_id < n else None

        self.bos_id = valid(bos_id)
        self.eos_id = valid(eos_id)
        self.unk_id = valid(unk_id)
        self.pad_id = valid(pad_id)
        self.add_bos = add_bos
        self.add_eos = add_eos
        if add_bos and self.bos_id is None:
            raise TokenizerError(
                "tokenizer.ggml.add_bos_token is set but the file has no valid bos_token_id."
            )
        if add_eos and self.eos_id is None:
            raise TokenizerError(
                "tokenizer.ggml.add_eos_token is set but the file has no valid eos_token_id."
            )
        self.eos_ids = frozenset(
            {i for i in (self.eos_id, valid(eot_id), valid(eom_id)) if i is not None} | end_by_text
        )
        # llama.cpp tries longer special tokens first; among equal lengths, lower ids first.
        self._specials = sorted(
            ((i, t) for i, t in enumerate(self._texts) if self._types[i] in _SPECIAL_TYPES),
            key=lambda it: -len(it[1].encode()),
        )
        self._token_bytes = [self._piece_bytes(i) for i in range(n)]
        self._add_space_prefix = model == "llama" and add_space_prefix
        self._bpe = self._build_bpe(merges, scores)

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_gguf_metadata(cls, meta: Mapping[str, Any]) -> Tokenizer:
        """Build from GGUF key/value metadata (strings as ``str``, arrays as lists)."""

        def get(key: str, default: Any = None) -> Any:
            return meta.get("tokenizer.ggml." + key, default)

        def array(key: str) -> list:
            value = get(key)  # large numeric arrays may come as numpy arrays
            return [] if value is None else list(value)

        model = get("model")
        if model is None:
            raise TokenizerError(
                "the GGUF has no tokenizer.ggml.model key: it carries no vocabulary, so moebox cannot "
                "turn text into tokens. Use a GGUF converted with its tokenizer."
            )
        tokens = get("tokens")
        if tokens is None:
            raise TokenizerError("the GGUF has no tokenizer.ggml.tokens: the vocabulary is missing.")
        # SentencePiece files may leave out the ids that are fixed by convention (llama.cpp's defaults).
        defaults = (1, 2, 0) if model == "llama" else (None, None, None)
        pre = get("pre") or "default"
        if model == "gpt2" and get("merges") is None:
            raise TokenizerError("the GGUF's gpt2 vocabulary has no tokenizer.ggml.merges.")
        return cls(
            model=model,
            tokens=tokens,
            token_types=[int(t) for t in array("token_type")],
            merges=array("merges"),
            scores=[float(x) for x in array("scores")],
            pre=pre,
            bos_id=get("bos_token_id", defaults[0]),
            eos_id=get("eos_token_id", defaults[1]),
            eot_id=get("eot_token_id"),
            eom_id=get("eom_token_id"),
            unk_id=get("unknown_token_id", defaults[2]),
            pad_id=get("padding_token_id"),
            # llama.cpp's defaults when the key is absent: SentencePiece and llama3 add BOS.
            add_bos=bool(
                get("add_bos_token", model == "llama" or pre in ("llama-bpe", "llama3", "llama-v3"))
            ),
            add_eos=bool(get("add_eos_token", False)),
            add_space_prefix=bool(get("add_space_prefix", True)),
        )

    @classmethod
    def from_gguf(cls, model: Any) -> Tokenizer:
        """Build from an opened GGUF: ``engine.gguf_file.GGUFModel`` (or a ``gguf.GGUFReader``)."""
        if hasattr(model, "metadata"):
            return cls.from_gguf_metadata(model.metadata)
        return cls.from_gguf_metadata(
            {k: f.contents() for k, f in model.fields.items() if k.startswith("tokenizer.")}
        )

    def _piece_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for, as llama.cpp's token_to_piece gives them (special=True)."""
        text, kind = self._texts[token_id], self._types[token_id]
        if kind in _SPECIAL_TYPES:
            return text.encode()
        if kind == TokenType.BYTE and len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            return bytes([int(text[3:5], 16)])
        if kind != TokenType.NORMAL:
            return b""  # UNUSED and undefined tokens print nothing in llama.cpp
        if self.model == "llama":
            return text.replace(_SPACE_MARK, " ").encode()
        try:
            return text.translate(_TO_LATIN1).encode("latin-1")
        except UnicodeEncodeError:
            # Characters outside GPT-2's byte alphabet cannot come from a byte-level vocabulary;
            # keep them as UTF-8 rather than dropping them.
            return b"".join(bytes([BYTE_DECODER[c]]) if c in BYTE_DECODER else c.encode() for c in text)

    def _build_bpe(self, merges: Sequence[str], scores: Sequence[float]) -> HFTokenizer:
        # A repeated text keeps its last id, as in llama.cpp.
        vocab = {t: i for i, t in enumerate(self._texts)}
        if self.model == "gpt2":
            pairs = []
            for m in merges:
                cut = m.find(" ", 1)  # llama.cpp splits at the first space after position 0
                left, right = m[:cut], m[cut + 1 :]
                # A merge whose parts or result are not tokens can never yield a token; the
                # tokenizers library refuses such merges, so they are left out (ranks keep their order).
                if cut > 0 and left in vocab and right in vocab and left + right in vocab:
                    pairs.append((left, right))
            pre = PRE_TOKENIZERS[self.pre]
            bpe = HFTokenizer(BPE(vocab, pairs, ignore_merges=pre.ignore_merges))
            bpe.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in pre.regexes]
                + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
            )
            return bpe
        # SentencePiece merges the adjacent pair whose joined text is the vocabulary entry with
        # the highest score; as BPE ranks that is every split of every entry into two entries,
        # ordered by the joined entry's score.
        if len(scores) < len(self._texts):
            raise TokenizerError("the GGUF's llama (SentencePiece) vocabulary has no tokenizer.ggml.scores.")
        ranked = []
        for text, token_id in vocab.items():
            for cut in range(1, len(text)):
                left, right = text[:cut], text[cut:]
                if left in vocab and right in vocab:
                    ranked.append((-scores[token_id], token_id, cut, left, right))
        ranked.sort()
        unk = self._texts[self.unk_id] if self.unk_id is not None else None
        return HFTokenizer(BPE(vocab, [(r[3], r[4]) for r in ranked], unk_token=unk, byte_fallback=True))

    # ---- public API -------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self._texts)

    def token_text(self, token_id: int) -> str:
        """The vocabulary entry of a token id, as stored in the GGUF."""
        self._check_ids((token_id,))
        return self._texts[token_id]

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for when decoded (special tokens: their text)."""
        self._check_ids((token_id,))
        return self._token_bytes[token_id]

    def is_special(self, token_id: int) -> bool:
        """True for CONTROL and UNKNOWN tokens: those ``decode(..., skip_special=True)`` leaves out."""
        self._check_ids((token_id,))
        return self._types[token_id] in (TokenType.CONTROL, TokenType.UNKNOWN)

    def token_id(self, text: str) -> int | None:
        """The id of the vocabulary entry ``text`` (e.g. a special token), or None."""
        for i, t in self._specials:
            if t == text:
                return i
        return self._bpe.token_to_id(text)

    def encode(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids of ``text``.

        add_special: put BOS/EOS around the ids as the file's add_bos_token/add_eos_token say.
        parse_special: a special token's text (e.g. ``<|im_start|>``) becomes that token; when
        False only USER_DEFINED tokens are recognised and control tokens are tokenized as text.
        """
        ids: list[int] = []
        if add_special and self.add_bos:
            ids.append(self.bos_id)  # type: ignore[arg-type]
        after_special = True
        for piece in self._partition(text, parse_special):
            if isinstance(piece, int):
                ids.append(piece)
                after_special = True
                continue
            if self.model == "llama":
                if self._add_space_prefix and after_special:
                    piece = " " + piece
                piece = piece.replace(" ", _SPACE_MARK)
            ids.extend(self._bpe.encode(piece, add_special_tokens=False).ids)
            after_special = False
        if add_special and self.add_eos:
            ids.append(self.eos_id)  # type: ignore[arg-type]
        return ids

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Text of token ids; bytes that do not form valid UTF-8 become U+FFFD.

        skip_special leaves out CONTROL tokens (BOS, EOS, chat markers), as llama.cpp does
        when asked not to render special tokens.
        """
        return self.decode_bytes(ids, skip_special).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Iterable[int], skip_special: bool = False) -> bytes:
        """The raw bytes of token ids (see ``decode``)."""
        ids = list(ids)
        self._check_ids(ids)
        out = []
        first = True
        for i in ids:
            if skip_special and self._types[i] in (TokenType.CONTROL, TokenType.UNKNOWN):
                continue
            piece = self._token_bytes[i]
            if first and self._add_space_prefix and piece.startswith(b" "):
                piece = piece[1:]  # the space encode put in front of the text
            first = False
            out.append(piece)
        return b"".join(out)

    def strips_leading_space(self) -> bool:
        """Whether ``decode`` drops one leading space of the first piece (SentencePiece)."""
        return self._add_space_prefix

    def _check_ids(self, ids: Iterable[int]) -> None:
        n = len(self._texts)
        for i in ids:
            if not isinstance(i, int) or not 0 <= i < n:
                raise TokenizerError(f"token id {i!r} is outside the vocabulary (0..{n - 1}).")

    def _partition(self, text: str, parse_special: bool) -> list[str | int]:
        """Cut special tokens out of ``text``: llama.cpp's tokenizer_st_partition."""
        pieces: list[str | int] = [text] if text else []
        for token_id, special in self._specials:
            if not parse_special and self._types[token_id] != TokenType.USER_DEFINED:
                continue
            if not any(isinstance(p, str) and special in p for p in pieces):
                continue
            cut: list[str | int] = []
            for p in pieces:
                if isinstance(p, int) or special not in p:
                    cut.append(p)
                    continue
                parts = p.split(special)
                for k, part in enumerate(parts):
                    if k:
                        cut.append(token_id)
                    if part:
                        cut.append(part)
            pieces = cut
        return pieces
