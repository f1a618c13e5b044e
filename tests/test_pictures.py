"""Token-selection pictures: HTML that escapes text and marks exactly the kept and decisive tokens."""

import logging
from html.parser import HTMLParser

import torch
from transformers import AutoTokenizer

from support.configs import compose_train, tiny_overrides
from selalign.pictures import pair_pictures, selection_html, token_texts
from selalign.train import train


class ListTokenizer:
    """Decodes ids by joining the strings of a fixed vocabulary: enough for ``pair_pictures``."""

    vocab = ["<pad>", "Say hi.", " <script>", "alert(1)", "</script>", " & bye", " ok"]

    def decode(self, ids):
        return "".join(self.vocab[i] for i in ids)


class TokenSpans(HTMLParser):
    """(role, text, classes) of every ``span.tok`` of the page, the text unescaped."""

    def __init__(self):
        super().__init__()
        self.role, self.open_token, self.tokens = None, None, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "div" and "data-role" in attrs:
            self.role = attrs["data-role"]
        if tag == "span" and "tok" in attrs.get("class", "").split():
            self.open_token = [self.role, "", set(attrs["class"].split())]

    def handle_data(self, data):
        if self.open_token is not None:
            self.open_token[1] += data

    def handle_endtag(self, tag):
        if tag == "span" and self.open_token is not None:
            self.tokens.append(tuple(self.open_token))
            self.open_token = None


def one_pair_batch(decisive: bool):
    """One pair: prompt 'Say hi.', chosen ' <script>alert(1)</script>', rejected ' & bye ok' (right-padded)."""
    input_ids = torch.tensor([[1, 2, 3, 4], [1, 5, 6, 0]])
    batch = {
        "input_ids": input_ids,
        "attention_mask": (input_ids != 0).long(),
        "response_mask": torch.tensor([[False, True, True, True], [False, True, True, False]]),
    }
    if decisive:
        batch["decisive_mask"] = torch.tensor([[False, False, True, False], [False, True, False, False]])
    selected = torch.tensor([[False, True, True, False], [False, False, True, False]])
    scores = torch.tensor([[0.0, 0.9, 0.5, -0.2], [0.0, 0.1, 0.3, 0.0]])
    return batch, selected, scores


def parsed_page(decisive: bool) -> tuple[str, list]:
    batch, selected, scores = one_pair_batch(decisive)
    page = selection_html(pair_pictures(batch, selected, scores, ListTokenizer()), "step <0>")
    parser = TokenSpans()
    parser.feed(page)
    return page, parser.tokens


def test_text_is_escaped_and_the_prompt_shown_plain():
    page, tokens = parsed_page(decisive=True)
    assert "<script>" not in page and "&lt;script&gt;" in page and "&amp; bye" in page and "step &lt;0&gt;" in page
    assert [text for role, text, _ in tokens] == [" <script>", "alert(1)", "</script>", " & bye", " ok"]
    assert 'class="prompt">Say hi.</div>' in page


def test_kept_and_decisive_tokens_are_marked():
    _, tokens = parsed_page(decisive=True)
    assert [(role, text) for role, text, classes in tokens if "kept" in classes] == [("chosen", " <script>"), ("chosen", "alert(1)"), ("rejected", " ok")]
    assert [(role, text) for role, text, classes in tokens if "decisive" in classes] == [("chosen", "alert(1)"), ("rejected", " & bye")]


def test_without_an_oracle_nothing_is_outlined():
    page, tokens = parsed_page(decisive=False)
    assert not any("decisive" in classes for _, _, classes in tokens)
    assert "kept 2 of 3 tokens)" in page and "decisive," not in page


def test_token_texts_rebuild_the_decoded_text(tiny_lm):
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    ids = tokenizer("Well, the fox is <b>red</b> & blue.")["input_ids"]
    assert "".join(token_texts(tokenizer, ids)) == tokenizer.decode(ids)


def test_selective_training_writes_start_and_end_pictures(tiny_lm, tiny_ref, pairs_file, tmp_path):
    run_dir = tmp_path / "run"
    train(compose_train(*tiny_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), "logger=none", "trainer.max_steps=1", output_dir=run_dir))
    for when in ("start", "end"):
        parser = TokenSpans()
        parser.feed((run_dir / f"selection_{when}.html").read_text())
        assert {role for role, _, _ in parser.tokens} == {"chosen", "rejected"}
        assert any("kept" in classes for _, _, classes in parser.tokens)


def test_objectives_without_selection_get_no_pictures(tiny_lm, tiny_ref, pairs_file, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="selalign.callbacks")
    run_dir = tmp_path / "run"
    train(compose_train(*tiny_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), "method=dpo", "logger=none", "trainer.max_steps=0", output_dir=run_dir))
    assert not list(run_dir.glob("selection_*.html"))
    assert "DPO selects no tokens: no selection pictures" in caplog.text
