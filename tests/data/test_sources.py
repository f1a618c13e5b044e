"""Data files that cannot be read fail before any model loads, naming the file, the line and what is wrong."""

import json

import pandas as pd
import pytest
from transformers import AutoTokenizer

from support.tiny import toy_pairs, write_jsonl
from selalign.data import DataFileError, FilesDataModule, InvalidRowError


@pytest.fixture(scope="module")
def tokenizer(tiny_lm):
    return AutoTokenizer.from_pretrained(tiny_lm)


def lines(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def setup_error(tokenizer, path, **kwargs):
    with pytest.raises(Exception) as error:
        FilesDataModule(path=str(path), tokenizer=tokenizer, **kwargs).setup("fit")
    return error


@pytest.mark.parametrize("content", [b"", b"\n  \n", b"[]"], ids=["empty", "blank_lines", "empty_array"])
def test_a_file_without_rows_says_so(content, tokenizer, tmp_path):
    path = tmp_path / ("rows.json" if content == b"[]" else "rows.jsonl")
    path.write_bytes(content)
    error = setup_error(tokenizer, path)
    assert error.type is DataFileError
    assert str(error.value) == f"data file {str(path)!r} holds no rows"


def test_bytes_that_are_not_utf8_are_named_by_line_and_column(tokenizer, tmp_path):
    rows = toy_pairs(10)
    rows[6]["chosen"] = "Caf\u00e9 au lait."
    path = tmp_path / "latin1.jsonl"
    path.write_bytes("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("latin-1"))
    column = json.dumps(rows[6], ensure_ascii=False).index("\u00e9") + 1
    error = setup_error(tokenizer, path)
    assert error.type is DataFileError
    assert str(error.value).startswith(f"data file {str(path)!r}, line 7, column {column}: byte 0xe9 is not UTF-8 text")


def test_a_cut_off_last_line_is_named(tokenizer, tmp_path):
    path = tmp_path / "cut.jsonl"
    path.write_text(lines(toy_pairs(5)) + '{"prompt": "p", "chosen": "a", "rej')
    error = setup_error(tokenizer, path)
    assert error.type is DataFileError
    assert str(error.value).startswith(f"data file {str(path)!r}, line 6: the last line is cut off (not complete JSON")


def test_invalid_json_inside_the_file_is_named_by_line(tokenizer, tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(lines(toy_pairs(3)) + "{'prompt': 'single quotes'}\n" + lines(toy_pairs(3)))
    error = setup_error(tokenizer, path)
    assert error.type is DataFileError
    assert str(error.value).startswith(f"data file {str(path)!r}, line 4: not valid JSON (Expecting property name enclosed in double quotes, column 2)")


def test_bad_row_is_named_by_the_line_of_the_file_not_its_place_in_the_train_share(tokenizer, tmp_path):
    rows = toy_pairs(40)
    del rows[7]["chosen"]
    path = tmp_path / "pairs.jsonl"
    # blank lines are skipped by the reader but still count as lines of the file
    path.write_text(lines(rows[:3]) + "\n" + lines(rows[3:]))
    error = setup_error(tokenizer, path, validation_fraction=0.2)
    assert error.type is InvalidRowError
    assert str(error.value) == f"{path}, line 9: field 'chosen': missing"


def test_skipped_rows_of_both_shares_are_named_by_their_lines(tokenizer, tmp_path):
    rows = toy_pairs(40)
    for row in rows[1::2]:
        row["chosen"] = row["rejected"]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    dm = FilesDataModule(path=str(path), tokenizer=tokenizer, validation_fraction=0.2, on_invalid="skip", output_dir=str(tmp_path))
    dm.setup("fit")
    skipped = [json.loads(line) for line in (tmp_path / "skipped_rows.jsonl").read_text().splitlines()]
    assert sorted(entry["line"] for entry in skipped) == list(range(2, 41, 2))
    assert {entry["file"] for entry in skipped} == {str(path)}
    assert dm.stats["train/pairs"] + dm.stats["validation/pairs"] == 20 and dm.stats["validation/pairs"] < 8  # both shares had bad rows


def test_skipped_rows_name_file_and_line(tokenizer, tmp_path):
    rows = toy_pairs(6)
    rows[0]["rejected"] = rows[0]["chosen"]
    rows[4]["prompt"] = None
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    valid = write_jsonl(tmp_path / "val.jsonl", toy_pairs(3))
    dm = FilesDataModule(path=str(train), validation_path=str(valid), tokenizer=tokenizer, on_invalid="skip", output_dir=str(tmp_path))
    dm.setup("fit")
    skipped = [json.loads(line) for line in (tmp_path / "skipped_rows.jsonl").read_text().splitlines()]
    assert [(e["file"], e["line"], e["field"], e["problem"]) for e in skipped] == [
        (str(train), 1, "rejected", "identical to chosen"), (str(train), 5, "prompt", "missing"),
    ]


def test_parquet_rows_are_named_by_their_row_in_the_file(tokenizer, tmp_path):
    rows = toy_pairs(20)
    rows[12]["chosen"] = "   "
    path = tmp_path / "pairs.parquet"
    pd.DataFrame(rows).to_parquet(path)
    error = setup_error(tokenizer, path, validation_fraction=0.2)
    assert str(error.value) == f"{path}, row 13: field 'chosen': empty string"


def test_json_array_rows_are_named_by_their_place_in_the_array(tokenizer, tmp_path):
    rows = toy_pairs(20)
    rows[3]["rejected"] = rows[3]["chosen"]
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(rows, indent=1))
    error = setup_error(tokenizer, path, validation_fraction=0.2)
    assert str(error.value) == f"{path}, row 4 of the JSON array: field 'rejected': identical to chosen"
