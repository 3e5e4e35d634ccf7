import json

import pandas as pd
import pytest

from damoc.data.io import DataError, load_samples
from damoc.data.records import read_samples, write_samples

FIELDS = {"instruction": "instruction", "input": "question", "output": "answer"}
ROWS = [{"instruction": "Answer.", "question": f"q{i}", "answer": f"a{i}"} for i in range(5)]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_every_format_loads_the_same_samples(tmp_path, fmt):
    path = tmp_path / f"d.{fmt}"
    frame = pd.DataFrame(ROWS)
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    samples = load_samples(str(path), FIELDS, id_prefix="t-")
    assert [(s.id, s.instruction, s.input, s.output) for s in samples] == [
        (f"t-{i + 1}", "Answer.", f"q{i}", f"a{i}") for i in range(5)]
    assert len(load_samples(str(path), FIELDS, limit=2)) == 2


def test_missing_column_names_the_mapping(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"q": "x", "answer": "y"}) + "\n")
    with pytest.raises(DataError, match=r"input -> 'question'.*data.fields"):
        load_samples(str(path), FIELDS)


def test_empty_cell_names_file_row_and_field(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame(ROWS[:2] + [{"instruction": "i", "question": "q", "answer": ""}]).to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        load_samples(str(path), FIELDS)
    assert str(path) in str(err.value) and "row 3" in str(err.value) and "'answer'" in str(err.value)


def test_instruction_column_is_optional(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"question": "x", "answer": "y"}) + "\n")
    [s] = load_samples(str(path), {**FIELDS, "instruction": None})
    assert s.instruction == "" and s.input == "x"


def test_unparseable_file_is_a_data_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("{not json\n")
    with pytest.raises(DataError, match="cannot parse"):
        load_samples(str(path), FIELDS)


def test_records_round_trip(tmp_path):
    from damoc.data.schema import Sample

    samples = [Sample(id=str(i), instruction="é", input="q", output="a\nb") for i in range(3)]
    assert write_samples(samples, tmp_path / "x.jsonl") == 3
    assert read_samples(tmp_path / "x.jsonl") == samples


# ------------------------------------------------------------------------------------ multiple-choice options
MC_FIELDS = {**FIELDS, "options": "choices"}
MC_ROWS = [{"instruction": "Answer.", "question": f"q{i}", "answer": "b", "choices": ["a", "b", "c", "d"]}
           for i in range(3)]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_options_load_from_lists_or_json_strings(tmp_path, fmt):
    path = tmp_path / f"d.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in MC_ROWS))
    elif fmt == "csv":  # a CSV cell holds the JSON list as a string
        pd.DataFrame([{**r, "choices": json.dumps(r["choices"])} for r in MC_ROWS]).to_csv(path, index=False)
    else:
        pd.DataFrame(MC_ROWS).to_parquet(path)
    samples = load_samples(str(path), MC_FIELDS, require_options=True)
    assert [s.options for s in samples] == [("a", "b", "c", "d")] * 3
    assert hash(samples[0])  # still frozen and hashable


def test_options_column_is_optional_unless_required(tmp_path):
    path = tmp_path / "train.jsonl"  # a multiple-choice task's training file: plain rows
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert all(s.options == () for s in load_samples(str(path), MC_FIELDS))
    assert all(s.options == () for s in load_samples(str(path), {**FIELDS, "options": ""}))
    with pytest.raises(DataError, match=r"choices"):
        load_samples(str(path), MC_FIELDS, require_options=True)
    with pytest.raises(DataError, match=r"data\.fields\.options"):
        load_samples(str(path), {**FIELDS, "options": ""}, require_options=True)


@pytest.mark.parametrize("cell,message", [
    ("not json", "not a list"), ('{"a": 1}', "list of at least 2"), (["b"], "at least 2"), ([1, 2], "at least 2"),
    (["a", "c"], "output 'b' is not one of its options"), (["b", "b"], "repeats an option")])
def test_bad_options_name_file_row_and_field(tmp_path, cell, message):
    path = tmp_path / "d.jsonl"
    rows = MC_ROWS[:1] + [{**MC_ROWS[1], "choices": cell}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=message) as err:
        load_samples(str(path), MC_FIELDS)
    assert str(path) in str(err.value) and "row 2" in str(err.value) and "'choices'" in str(err.value)


def test_required_options_missing_in_a_row(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = MC_ROWS[:1] + [{k: v for k, v in MC_ROWS[1].items() if k != "choices"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_samples(str(path), MC_FIELDS)[1].options == ()
    with pytest.raises(DataError, match=r"row 2: field 'choices' \(options\) is empty"):
        load_samples(str(path), MC_FIELDS, require_options=True)


def test_records_round_trip_options_and_read_old_records(tmp_path):
    from damoc.data.schema import Sample

    samples = [Sample("1", "", "q", "b", ["a", "b"]), Sample("2", "", "q", "a")]
    assert samples[0].options == ("a", "b") and samples[0].to_dict()["options"] == ["a", "b"]
    assert "options" not in samples[1].to_dict()  # plain rows are written exactly as before
    write_samples(samples, tmp_path / "x.jsonl")
    assert read_samples(tmp_path / "x.jsonl") == samples
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"id": "1", "instruction": "", "input": "q", "output": "a"}) + "\n")
    assert read_samples(old) == [Sample("1", "", "q", "a")]
    with pytest.raises(TypeError):
        Sample("1", "", "q", "a", "ab")
