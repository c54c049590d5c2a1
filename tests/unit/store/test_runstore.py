import pandas as pd
import pytest

from agent.store.runstore import InputError, RunStore, prepare_input, read_input, read_table
from agent.task import TaskSpec


def task_for(path, **kw):
    return TaskSpec(description="sentiment", labels=["neg", "pos"], data_path=str(path), **kw)


def test_csv_jsonl_and_parquet_read_alike(tmp_path):
    frame = pd.DataFrame({"text": ["good", "bad"], "label": ["pos", "neg"]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "d.parquet")
    for name in ("d.csv", "d.jsonl", "d.parquet"):
        assert read_table(tmp_path / name)["text"].tolist() == ["good", "bad"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "the file is empty"),
        (b"text,label\n", "no rows"),
        (b"text\nok\ncaf\xe9\n", "line 3 is not valid UTF-8"),
    ],
)
def test_bad_files_get_one_line_errors(tmp_path, content, message):
    path = tmp_path / "in.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message) as err:
        read_table(path)
    assert "\n" not in str(err.value)
    assert str(path) in str(err.value)


def test_unsupported_suffix(tmp_path):
    (tmp_path / "in.xlsx").write_bytes(b"x")
    with pytest.raises(InputError, match="unsupported file type"):
        read_table(tmp_path / "in.xlsx")


def test_unknown_column_names_the_columns_and_flag(tmp_path):
    (tmp_path / "d.csv").write_text("body,label\nhi,pos\n")
    with pytest.raises(
        InputError, match=r"no column 'text' \(columns: body, label\).*--text-column"
    ):
        prepare_input(task_for(tmp_path / "d.csv"))


def test_empty_and_nan_texts_are_kept_as_none(tmp_path):
    (tmp_path / "d.csv").write_text('text\nhello\n""\n   \nworld\n')
    rows = prepare_input(task_for(tmp_path / "d.csv"))
    assert rows["text"].isna().tolist() == [False, True, True, False]
    assert rows["text"].dropna().tolist() == ["hello", "world"]
    assert rows["id"].tolist() == ["0", "1", "2", "3"]


def test_duplicate_ids_are_refused(tmp_path):
    (tmp_path / "d.csv").write_text("id,text\na,x\na,y\n")
    with pytest.raises(InputError, match="id 'a' appears more than once"):
        prepare_input(task_for(tmp_path / "d.csv", id_column="id"))


def test_gold_outside_labels_is_refused(tmp_path):
    (tmp_path / "d.csv").write_text("text,gold\nx,pos\ny,maybe\n")
    with pytest.raises(InputError, match="row 2 of column 'gold' holds 'maybe'"):
        prepare_input(task_for(tmp_path / "d.csv", reviewer="oracle:gold"))


def test_create_cuts_the_first_chunk_of_labelable_rows_and_refuses_to_overwrite(tmp_path):
    (tmp_path / "d.csv").write_text("text\n" + "\n".join(["a", "", "b", "c", "d", "e"]) + "\n")
    spec = task_for(tmp_path / "d.csv", chunk_size=2)
    store = RunStore.create(tmp_path / "run", spec, prepare_input(spec))
    # Later chunks are cut when they start, sized from what the run has seen (pipeline.chunking).
    assert store.n_chunks() == 1
    assert pd.read_parquet(store.input_chunk(0))["text"].tolist() == ["a", "b"]
    assert store.rows_left(1) == 3
    store.cut_chunk(1, 2)
    assert pd.read_parquet(store.input_chunk(1))["text"].tolist() == ["c", "d"]
    assert store.rows_left(2) == 1
    assert len(store.rows()) == 6
    assert not (tmp_path / "run.partial").exists()
    with pytest.raises(InputError, match="already exists"):
        RunStore.create(tmp_path / "run", spec, prepare_input(spec))


def test_a_column_of_mixed_kinds_is_refused_by_name(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "a", "n": 1}\n{"text": "b", "n": "two"}\n')
    with pytest.raises(InputError, match="column 'n' mixes kinds of values"):
        read_input(task_for(tmp_path / "d.jsonl"))


def test_create_keeps_the_users_file_as_given(tmp_path):
    frame = pd.DataFrame({"text": ["good", "bad"], "score": [0.5, 1.5], "note": ["x", None]})
    frame.to_parquet(tmp_path / "d.parquet")
    spec = task_for(tmp_path / "d.parquet")
    source = read_input(spec)
    store = RunStore.create(tmp_path / "run", spec, prepare_input(spec, source), source)
    assert store.source().equals(frame)
