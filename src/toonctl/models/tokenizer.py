"""The CLIP text tokenizer as OpenCLIP 2.22 runs it (``open_clip/tokenizer.py``: ``SimpleTokenizer`` and
``tokenize``, itself OpenAI CLIP's ``clip/simple_tokenizer.py``); ToonCrafter calls it in
``lvdm/modules/encoders/condition.py::FrozenOpenCLIPEmbedder.forward``.

Text is cleaned (ftfy, html entities, whitespace, lower case), split by a regular expression into words,
numbers and punctuation runs, and each piece is byte-pair encoded over CLIP's byte-level alphabet (every
UTF-8 byte has a printable stand-in character; the last symbol of a piece carries the ``</w>`` end-of-word
marker). The vocabulary has 49408 entries:

* 256 single bytes, then the same 256 with ``</w>``;
* 48894 merged symbols, one per line of the merges file, in rank order;
* ``<start_of_text>`` (49406) and ``<end_of_text>`` (49407).

The merges file ``data/bpe_simple_vocab_16e6.txt.gz`` comes from OpenAI CLIP (MIT licence, see
``data/LICENSE-CLIP-VOCAB.txt``) and is read on first use.
"""

from __future__ import annotations

import gzip
import html
import math
from pathlib import Path

import ftfy
import regex
import torch

VOCAB_FILE = Path(__file__).parent / "data" / "bpe_simple_vocab_16e6.txt.gz"
START_OF_TEXT = "<start_of_text>"
END_OF_TEXT = "<end_of_text>"
END_OF_WORD = "</w>"
NUM_MERGES = 49152 - 256 - 2  # merges used from the file (line 0 is a version header): 48894
CONTEXT_LENGTH = 77

# Special tokens first (a lower-cased "<end_of_text>" in a prompt becomes the special id, as in CLIP), then
# English contractions, letter runs, single digits, and runs of anything else that is not whitespace.
_PIECE_PATTERN = regex.compile(
    rf"{START_OF_TEXT}|{END_OF_TEXT}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")


def byte_alphabet() -> dict[int, str]:
    """The stand-in character of each byte value; iteration order is vocabulary order (256 entries).

    Printable Latin-1 bytes (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) stand for themselves and come first;
    the other 68 bytes, in increasing order, map to code points 256, 257, ... so no piece contains
    whitespace or control characters.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = sorted(set(range(256)) - set(printable))
    return {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(others)}


def clean_text(text: str) -> str:
    """Fix mojibake, unescape html entities (twice), collapse whitespace and lower-case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


class CLIPTokenizer:
    """``tokenizer(texts) -> (N, 77)`` token ids, identical to ``open_clip.tokenize``.

    Each row is ``[49406, *bpe_ids, 49407]`` padded with 0; a longer sequence is cut to ``context_length``
    and its last id set to 49407. BPE results are cached per piece.
    """

    def __init__(self, vocab_file: str | Path = VOCAB_FILE) -> None:
        self.vocab_file = Path(vocab_file)
        self._ids: dict[str, int] | None = None  # symbol -> id
        self._merge_rank: dict[tuple[str, str], int] = {}
        self._byte_to_char = byte_alphabet()
        self._piece_cache: dict[str, list[int]] = {}

    @property
    def start_id(self) -> int:
        return self._vocab()[START_OF_TEXT]

    @property
    def end_id(self) -> int:
        return self._vocab()[END_OF_TEXT]

    @property
    def vocab_size(self) -> int:
        return len(self._vocab())

    def _vocab(self) -> dict[str, int]:
        if self._ids is None:
            lines = gzip.open(self.vocab_file).read().decode("utf-8").split("\n")
            merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
            alphabet = list(byte_alphabet().values())
            symbols = alphabet + [c + END_OF_WORD for c in alphabet] + ["".join(m) for m in merges]
            symbols += [START_OF_TEXT, END_OF_TEXT]
            self._merge_rank = {pair: rank for rank, pair in enumerate(merges)}
            self._ids = {symbol: i for i, symbol in enumerate(symbols)}
        return self._ids

    def _bpe(self, piece: str) -> list[str]:
        """Merge the characters of ``piece`` (already in the byte alphabet) into vocabulary symbols.

        Repeatedly merges every occurrence (left to right, non-overlapping) of the adjacent pair with the
        lowest merge rank, until no adjacent pair is a known merge.
        """
        symbols = [*piece[:-1], piece[-1] + END_OF_WORD]
        while len(symbols) > 1:
            ranks = [self._merge_rank.get(pair, math.inf) for pair in zip(symbols, symbols[1:], strict=False)]
            best = min(ranks)
            if best == math.inf:
                break
            first, second = symbols[ranks.index(best)], symbols[ranks.index(best) + 1]
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols

    def _piece_ids(self, piece: str) -> list[int]:
        ids = self._piece_cache.get(piece)
        if ids is None:
            vocab = self._vocab()
            if piece in (START_OF_TEXT, END_OF_TEXT):
                ids = [vocab[piece]]
            else:
                chars = "".join(self._byte_to_char[b] for b in piece.encode("utf-8"))
                ids = [vocab[symbol] for symbol in self._bpe(chars)]
            self._piece_cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """BPE ids of ``text`` without the start/end tokens or padding."""
        ids: list[int] = []
        for piece in _PIECE_PATTERN.findall(clean_text(text)):
            ids.extend(self._piece_ids(piece))
        return ids

    def __call__(self, texts: str | list[str], context_length: int = CONTEXT_LENGTH) -> torch.LongTensor:
        """Token ids, ``(N, context_length)`` int64 (``N = 1`` for a single string)."""
        if isinstance(texts, str):
            texts = [texts]
        tokens = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.start_id, *self.encode(text), self.end_id]
            if len(ids) > context_length:
                ids = ids[: context_length - 1] + [self.end_id]
            tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return tokens
