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
