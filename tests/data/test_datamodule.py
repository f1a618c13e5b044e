import json

import pytest
import torch
from transformers import AutoTokenizer

from support.tiny import build_tokenizer, toy_pairs, write_jsonl
from selalign.data import FilesDataModule, InvalidRowError, PreferenceCollator, render_prompt, row_problem, tokenize_pair


@pytest.fixture(scope="module")
def tokenizer(tiny_lm):
    return AutoTokenizer.from_pretrained(tiny_lm)


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("chat_tok"), with_chat_template=True)


@pytest.mark.parametrize("row, field, problem", [
    ({"chosen": "a", "rejected": "b"}, "prompt", "missing"),
    ({"prompt": "p", "rejected": "b"}, "chosen", "missing"),
    ({"prompt": "p", "chosen": "  ", "rejected": "b"}, "chosen", "empty string"),
    ({"prompt": "p", "chosen": "a", "rejected": "a"}, "rejected", "identical to chosen"),
    ({"prompt": "p", "chosen": 3, "rejected": "b"}, "chosen", "expected a string or a list of messages, got int"),
    ({"prompt": [], "chosen": "a", "rejected": "b"}, "prompt", "empty message list"),
    ({"prompt": [{"role": "user"}], "chosen": "a", "rejected": "b"}, "prompt", "message 0 is not a {role, content} dict"),
    ({"prompt": [{"role": "robot", "content": "x"}], "chosen": "a", "rejected": "b"}, "prompt", "message 0 has role 'robot'"),
])
def test_row_problems(row, field, problem):
    got_field, got_problem = row_problem(row)
    assert got_field == field and got_problem.startswith(problem)


def test_plain_format_tokenization(tokenizer):
    row = {"prompt": "What colour is the cat?", "chosen": "The cat is red.", "rejected": "The cat is blue."}
    assert render_prompt(tokenizer, row["prompt"]) == "<bos>User: What colour is the cat?\nAssistant:"
    pair = tokenize_pair(tokenizer, row, max_length=128, max_prompt_length=64)
    assert pair.prompt_ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(pair.chosen_ids) == " The cat is red.<eos>"
    assert pair.rejected_ids[-1] == tokenizer.eos_token_id
    assert not pair.prompt_truncated and not pair.response_truncated


def test_chat_template_and_message_lists(chat_tokenizer):
    row = {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Colour of the cat?"}],
        "chosen": [{"role": "assistant", "content": "Red."}],
        "rejected": [{"role": "assistant", "content": "Blue."}],
    }
    pair = tokenize_pair(chat_tokenizer, row, max_length=128, max_prompt_length=64)
    assert chat_tokenizer.decode(pair.prompt_ids).endswith("<|im_start|>assistant\n")
    assert chat_tokenizer.decode(pair.chosen_ids) == "Red.<|im_end|>\n"
    # a plain-string row renders the same as its one-message conversation
    plain = tokenize_pair(chat_tokenizer, {"prompt": "Colour of the cat?", "chosen": "Red.", "rejected": "Blue."}, 128, 64)
    as_messages = tokenize_pair(chat_tokenizer, {"prompt": [{"role": "user", "content": "Colour of the cat?"}], "chosen": "Red.", "rejected": "Blue."}, 128, 64)
    assert plain == as_messages


def test_truncation_prompt_from_left_response_from_right(tokenizer):
    row = {"prompt": "one two three four five six seven eight nine ten " * 3, "chosen": "red " * 30, "rejected": "blue"}
    full = tokenize_pair(tokenizer, row, max_length=10_000, max_prompt_length=5_000)
    cut = tokenize_pair(tokenizer, row, max_length=20, max_prompt_length=8)
    assert cut.prompt_ids == full.prompt_ids[-8:]
    assert cut.chosen_ids == full.chosen_ids[:12]
    assert cut.rejected_ids == full.rejected_ids  # short enough
    assert cut.prompt_truncated and cut.response_truncated


def test_decisive_spans_become_token_masks(tokenizer):
    row = {"prompt": "q", "chosen": "The cat is red.", "rejected": "The cat is blue.", "chosen_decisive": [[11, 14]], "rejected_decisive": [[11, 15]]}
    pair = tokenize_pair(tokenizer, row, 128, 64)
    marked = [t for t, m in zip(pair.chosen_ids, pair.chosen_decisive) if m]
    assert tokenizer.decode(marked).strip() == "red"
    marked = [t for t, m in zip(pair.rejected_ids, pair.rejected_decisive) if m]
    assert tokenizer.decode(marked).strip() == "blue"


def test_collator_concatenates_and_masks():
    pairs = [
        {"index": 0, "prompt_ids": [1, 2], "chosen_ids": [3, 4, 5], "rejected_ids": [6]},
        {"index": 1, "prompt_ids": [1], "chosen_ids": [7], "rejected_ids": [8, 9]},
    ]
    batch = PreferenceCollator(pad_token_id=0, pad_to_multiple_of=8)(pairs)
    assert batch["input_ids"].shape == (4, 8)
    assert batch["input_ids"][:, :5].tolist() == [[1, 2, 3, 4, 5], [1, 7, 0, 0, 0], [1, 2, 6, 0, 0], [1, 8, 9, 0, 0]]
    assert batch["response_mask"][:, :5].int().tolist() == [[0, 0, 1, 1, 1], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 1, 1, 0, 0]]
    assert batch["attention_mask"].sum(1).tolist() == [5, 2, 3, 3]
    assert batch["pair_index"].tolist() == [0, 1]
    assert "decisive_mask" not in batch


def test_datamodule_splits_and_batches(tokenizer, pairs_file):
    dm = FilesDataModule(path=str(pairs_file), validation_fraction=0.25, tokenizer=tokenizer, batch_size=4)
    dm.setup("fit")
    assert dm.stats["train/pairs"] == 30 and dm.stats["validation/pairs"] == 10
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 8
    assert not (batch["response_mask"] & (batch["attention_mask"] == 0)).any()


def test_bad_row_error_names_file_row_and_field(tokenizer, tmp_path):
    rows = toy_pairs(6)
    del rows[4]["chosen"]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    valid = write_jsonl(tmp_path / "val.jsonl", toy_pairs(3))
    dm = FilesDataModule(path=str(path), validation_path=str(valid), tokenizer=tokenizer)
    with pytest.raises(InvalidRowError, match=r"bad.jsonl, line 5: field 'chosen': missing"):
        dm.setup("fit")


def test_skip_invalid_rows_writes_them_to_the_run_dir(tokenizer, tmp_path):
    rows = toy_pairs(6)
    rows[2]["rejected"] = rows[2]["chosen"]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    valid = write_jsonl(tmp_path / "val.jsonl", toy_pairs(3))
    dm = FilesDataModule(path=str(path), validation_path=str(valid), tokenizer=tokenizer, on_invalid="skip", output_dir=str(tmp_path))
    dm.setup("fit")
    assert dm.stats["train/pairs"] == 5 and dm.stats["skipped_rows"] == 1
    skipped = [json.loads(line) for line in (tmp_path / "skipped_rows.jsonl").read_text().splitlines()]
    assert skipped[0]["line"] == 3 and skipped[0]["field"] == "rejected" and skipped[0]["problem"] == "identical to chosen"


def test_empty_dataset_after_filtering_is_an_error(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "p", "chosen": "same", "rejected": "same"}])
    dm = FilesDataModule(path=str(path), validation_path=str(path), tokenizer=tokenizer, on_invalid="skip")
    with pytest.raises(ValueError, match="no valid preference rows left in .*train.jsonl"):
        dm.setup("fit")


def test_missing_file_and_bad_extension(tokenizer, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FilesDataModule(path=str(tmp_path / "nope.jsonl"), tokenizer=tokenizer).setup()
    (tmp_path / "rows.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported extension '.csv'"):
        FilesDataModule(path=str(tmp_path / "rows.csv"), tokenizer=tokenizer).setup()


def test_max_prompt_length_follows_max_length_unless_set(tokenizer, pairs_file):
    assert FilesDataModule(path=str(pairs_file), tokenizer=tokenizer, max_length=256).max_prompt_length == 128
    assert FilesDataModule(path=str(pairs_file), tokenizer=tokenizer, max_length=256, max_prompt_length=200).max_prompt_length == 200
    with pytest.raises(ValueError, match="need 0 < data.max_prompt_length < data.max_length, got 300 and 256"):
        FilesDataModule(path=str(pairs_file), tokenizer=tokenizer, max_length=256, max_prompt_length=300)


def test_files_config_with_a_short_max_length_composes_and_loads(tokenizer, pairs_file, tmp_path):
    import hydra

    from support.configs import compose_train

    cfg = compose_train("data=files", f"data.path={pairs_file}", "data.max_length=256", output_dir=tmp_path)
    dm = hydra.utils.instantiate(cfg.data, tokenizer=tokenizer)
    dm.setup("fit")
    assert (dm.max_length, dm.max_prompt_length) == (256, 128)
