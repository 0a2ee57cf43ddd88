"""``toonctl.models.tokenizer.CLIPTokenizer`` against ``open_clip.tokenize`` (the golden ``text.tokens``)."""

from __future__ import annotations

import torch

from conftest import golden_meta, load_golden
from toonctl.models.tokenizer import CLIPTokenizer, clean_text

SOT, EOT = 49406, 49407


def test_golden_prompts_tokenize_exactly():
    prompts = golden_meta()["text_prompts"]
    tokens = CLIPTokenizer()(prompts)
    assert tokens.dtype == torch.long
    assert torch.equal(tokens, load_golden("text")["tokens"])


def test_vocabulary_layout():
    tok = CLIPTokenizer()
    assert (tok.vocab_size, tok.start_id, tok.end_id) == (49408, SOT, EOT)


def test_empty_prompt_is_start_end_then_padding():
    row = CLIPTokenizer()("")[0]
    assert row.shape == (77,)
    assert row[:2].tolist() == [SOT, EOT]
    assert not row[2:].any()


def test_truncation_keeps_end_token_last():
    tokens = CLIPTokenizer()(["word " * 200, "a b c"], context_length=10)
    assert tokens.shape == (2, 10)
    assert tokens[0, 0] == SOT and tokens[0, -1] == EOT and (tokens[0, 1:-1] != EOT).all()
    short = tokens[1].tolist()
    assert short[0] == SOT and short[4] == EOT and short[5:] == [0] * 5  # "a b c" is three tokens


def test_cleaning_and_case_do_not_change_tokens():
    tok = CLIPTokenizer()
    assert clean_text("  A&amp;amp;B \n\t  C  ") == "a&b c"
    assert torch.equal(tok("Hello   WORLD"), tok("hello world"))
    assert tok.encode("hello world") == tok("hello world")[0, 1:3].tolist()


def test_bpe_cache_and_lazy_vocabulary():
    tok = CLIPTokenizer()
    assert tok._ids is None  # nothing read until the first call
    first = tok.encode("interpolation interpolation")
    assert tok._ids is not None and "interpolation" in tok._piece_cache
    assert first[: len(first) // 2] == first[len(first) // 2 :]
