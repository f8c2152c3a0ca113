"""Batch inputs: item forms, ids, validation before sending, rows and lazily read files."""

from __future__ import annotations

import jinja2
import pytest

from airflow.sdk import ObjectStoragePath
from airflow_gradient.batch.inputs import BatchInputs, estimate_tokens, iter_input_rows
from airflow_gradient.exceptions import GradientRequestInvalid


def items(**kwargs):
    kwargs.setdefault("default_model", "m")
    return list(BatchInputs(**kwargs))


def template(text: str):
    compiled = jinja2.Template(text)
    return lambda row: compiled.render({**row, "row": row})


def test_every_item_form_with_shared_params_and_overrides() -> None:
    got = items(
        inputs=["plain", [{"role": "user", "content": "listed"}],
                {"input": "own", "custom_id": "c1", "temperature": 0.9}],
        shared={"instructions": "Be brief.", "temperature": 0.1},
    )
    assert [i.index for i in got] == [0, 1, 2]
    assert got[0].request.input == "plain" and got[0].request.temperature == 0.1
    assert got[1].request.input[0].content == "listed"
    assert got[2].custom_id == "c1" and got[2].request.temperature == 0.9
    assert all(i.request.instructions == "Be brief." and i.request.model == "m" for i in got)
    assert got[0].custom_id.startswith("h-") and got[0].custom_id != got[1].custom_id


def test_hash_id_is_stable_and_follows_the_rendered_request() -> None:
    first = items(inputs=["a"], shared={"temperature": 0.1})[0].custom_id
    assert items(inputs=["a"], shared={"temperature": 0.1})[0].custom_id == first
    assert items(inputs=["a"], shared={"temperature": 0.2})[0].custom_id != first


def test_duplicate_ids_name_both_items() -> None:
    with pytest.raises(GradientRequestInvalid, match=r"items 0 and 2 have the same custom_id") as info:
        BatchInputs(inputs=["x", "y", "x"], default_model="m").validate()
    assert info.value.errors == [("item[2].custom_id", "duplicate")]
    with pytest.raises(GradientRequestInvalid, match="items 0 and 1"):
        same_ids = [{"input": "a", "custom_id": "k"}, {"input": "b", "custom_id": "k"}]
        BatchInputs(inputs=same_ids, default_model="m").validate()


def test_invalid_item_is_named_with_its_field() -> None:
    bad = BatchInputs(inputs=["ok", "fine", {"input": "x", "custom_id": "c-2", "temperature": 5}], default_model="m")
    with pytest.raises(GradientRequestInvalid) as info:
        bad.validate()
    assert "item 2 (custom_id 'c-2')" in str(info.value) and "temperature" in str(info.value)
    with pytest.raises(GradientRequestInvalid, match=r"item 1: model: missing"):
        BatchInputs(inputs=[{"input": "a", "model": "x"}, "b"]).validate()
    with pytest.raises(GradientRequestInvalid, match=r"item 0: input: missing"):
        BatchInputs(inputs=[{"prompt": "a"}], default_model="m").validate()
    with pytest.raises(GradientRequestInvalid, match="unknown parameter"):
        BatchInputs(inputs=[{"input": "a", "colour": "red"}], default_model="m").validate()


def test_sources_are_exclusive() -> None:
    with pytest.raises(GradientRequestInvalid, match="exactly one of"):
        BatchInputs(inputs=["a"], rows=[{}])
    with pytest.raises(GradientRequestInvalid, match="prompt_template goes with rows"):
        BatchInputs(rows=[{"a": 1}])
    with pytest.raises(GradientRequestInvalid, match="must be lists"):
        BatchInputs(inputs="just one prompt")


def test_rows_render_into_the_template_and_keep_their_ids() -> None:
    got = items(rows=[{"title": "Alpha", "custom_id": "doc-a"}, {"title": "Beta"}],
                render=template("Summarise {{ title }} ({{ row.title | lower }})"))
    assert [i.request.input for i in got] == ["Summarise Alpha (alpha)", "Summarise Beta (beta)"]
    assert got[0].custom_id == "doc-a" and got[1].custom_id.startswith("h-")


def test_rows_path_jsonl_and_csv_are_read_lazily(tmp_path) -> None:
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text('{"t": "one"}\n\n{"t": "two"}\nnot json\n')
    rows = iter_input_rows(ObjectStoragePath(str(jsonl)))
    assert next(rows) == {"t": "one"} and next(rows) == {"t": "two"}
    with pytest.raises(GradientRequestInvalid, match="line 4 is not JSON"):
        next(rows)
    csv_file = tmp_path / "rows.csv"
    csv_file.write_text("custom_id,t\nr1,\"one, with comma\"\nr2,two\n")
    got = items(rows_path=ObjectStoragePath(str(csv_file)), render=template("{{ t }}"))
    assert [(i.custom_id, i.request.input) for i in got] == [("r1", "one, with comma"), ("r2", "two")]


def test_token_estimate_counts_input_and_output() -> None:
    (short,) = items(inputs=[{"input": "x" * 400, "max_output_tokens": 50}])
    assert estimate_tokens(short.request) == short.estimated_tokens == 400 // 4 + 1 + 50


def test_rows_files_saved_by_spreadsheets_keep_their_custom_id(tmp_path) -> None:
    # Spreadsheets write a UTF-8 byte order mark and CRLF line ends; quoted fields may hold both.
    csv_file = tmp_path / "bom.csv"
    csv_file.write_bytes(b'\xef\xbb\xbfcustom_id,t\r\nr1,"caf\xc3\xa9, two\r\nlines"\r\n\r\nr2,plain\r\n')
    got = items(rows_path=ObjectStoragePath(str(csv_file)), render=template("{{ t }}"))
    assert [i.custom_id for i in got] == ["r1", "r2"]
    assert got[0].request.input == "café, two\r\nlines"
    jsonl_file = tmp_path / "bom.jsonl"
    jsonl_file.write_bytes(b'\xef\xbb\xbf{"custom_id": "j1", "t": "x"}\n')
    assert [i.custom_id for i in items(rows_path=ObjectStoragePath(str(jsonl_file)), render=template("{{ t }}"))] \
        == ["j1"]


@pytest.mark.parametrize(("content", "line", "said"), [
    (b"custom_id,t\nr1,one\nr2\n", 3, "1 fields where the header has 2"),
    (b"custom_id,t\nr1,one,two\n", 2, "3 fields where the header has 2"),
    (b"custom_id,t\nr1,caf\xe9\n", 2, "not UTF-8: invalid continuation byte at byte 18 of the file"),
    (b"t,t\nr1,one\n", 1, "repeats the column(s) ['t']"),
], ids=["short-row", "long-row", "latin-1", "repeated-column"])
def test_a_csv_row_that_cannot_be_a_row_names_the_file_and_line(tmp_path, content, line, said) -> None:
    csv_file = tmp_path / "rows.csv"
    csv_file.write_bytes(content)
    with pytest.raises(GradientRequestInvalid) as info:
        items(rows_path=ObjectStoragePath(str(csv_file)), render=template("{{ t }}"))
    assert str(csv_file) in str(info.value) and f"line {line} " in str(info.value) and said in str(info.value)
    assert info.value.errors[0][0] == f"rows_path:{line}"


def test_rows_are_read_one_line_at_a_time(tmp_path) -> None:
    # The first row comes out before the bad line is read: no pass holds the file in memory.
    csv_file = tmp_path / "rows.csv"
    csv_file.write_bytes(b"t\none\n" + b"\xff\n")
    rows = iter_input_rows(ObjectStoragePath(str(csv_file)))
    assert next(rows) == {"t": "one"}
    with pytest.raises(GradientRequestInvalid, match="line 3 is not UTF-8"):
        next(rows)
