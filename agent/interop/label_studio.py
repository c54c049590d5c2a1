"""Label Studio, both ways: a project to import (tasks with pre-annotations, the labeling
config), and its JSON export read back as human answers.

Out: tasks.json holds one task per row, `data` every column of the row (the user's and the
run's `aa_` ones, so `aa_id` comes back on export) plus `text`, and one prediction: the run's
label in Label Studio's choices format, `model_version` the label's source (committee, llm,
gold, ...), `score` its calibrated confidence, so a team sorts by least confident first.
config.xml is the matching labeling interface: a Text and a single-choice Choices of the task's
labels.

In: Label Studio's JSON export (a list of tasks, each with `data` and `annotations`, each
annotation's `result` holding `{"type": "choices", "value": {"choices": [LABEL]}}`), validated
with pydantic. Each task's latest annotation that was not cancelled becomes a human answer
(agent.pipeline.human), where the review console puts them: the row's hard/<chunk>.parquet,
source `human`. A row the committee had agreed on joins its chunk's hard samples first.
"""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import pandas as pd
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from agent.domain import Source, output_name
from agent.errors import UserError
from agent.pipeline.human import Answers, hard_items
from agent.store.runstore import RunStore, write_json, write_parquet, write_text

# The names that tie config.xml's tags to the predictions' results.
CHOICES_NAME, TEXT_NAME = "label", "text"


def text_key(store: RunStore, table: pd.DataFrame) -> str:
    """The task data key holding the text: `text`, unless a column of the user's other than
    the text column already has that name; then the text column's own."""
    column = store.task().text_column
    return TEXT_NAME if column == TEXT_NAME or TEXT_NAME not in table.columns else column


def labeling_config(labels: list[str], text: str) -> str:
    view = ElementTree.Element("View")
    ElementTree.SubElement(view, "Text", name=TEXT_NAME, value=f"${text}")
    choices = ElementTree.SubElement(
        view, "Choices", name=CHOICES_NAME, toName=TEXT_NAME, choice="single", showInLine="true"
    )
    for label in labels:
        ElementTree.SubElement(choices, "Choice", value=label)
    ElementTree.indent(view)
    return ElementTree.tostring(view, encoding="unicode") + "\n"


def tasks(store: RunStore, table: pd.DataFrame) -> list[dict]:
    """One Label Studio task per row of `table` (export_table's)."""
    key = text_key(store, table)
    column = store.task().text_column
    # pandas writes NaN as null, numpy numbers and timestamps as JSON values.
    text = table.to_json(orient="records", force_ascii=False, date_format="iso") or "[]"
    records = json.loads(text)
    out = []
    for record in records:
        data = {**record, key: record[column]}
        label = record[output_name("label")]
        predictions = []
        if label is not None:
            prediction = {
                "model_version": record[output_name("source")],
                "result": [
                    {
                        "from_name": CHOICES_NAME,
                        "to_name": TEXT_NAME,
                        "type": "choices",
                        "value": {"choices": [label]},
                    }
                ],
            }
            if record[output_name("confidence")] is not None:
                prediction["score"] = record[output_name("confidence")]
            predictions.append(prediction)
        out.append({"data": data, "predictions": predictions})
    return out


def write_project(store: RunStore, table: pd.DataFrame, folder: Path) -> list[Path]:
    """tasks.json and config.xml in `folder`; returns their paths."""
    folder = Path(folder)
    tasks_path, config_path = folder / "tasks.json", folder / "config.xml"
    write_json(tasks(store, table), tasks_path)
    write_text(labeling_config(store.task().labels, text_key(store, table)), config_path)
    return [tasks_path, config_path]


# ---- reading an export back ---------------------------------------------------------------
class _Result(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    value: dict


class _Annotation(BaseModel):
    model_config = ConfigDict(extra="allow")
    result: list[_Result] = []
    was_cancelled: bool = False
    created_at: str | None = None
    updated_at: str | None = None


class _Task(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int | str | None = None
    data: dict
    annotations: list[_Annotation] = []


_EXPORT = TypeAdapter(list[_Task])


def read_answers(path: Path, labels: list[str]) -> dict[str, str]:
    """Row id (`data.aa_id`) -> the label of its task's latest annotation not cancelled.
    Tasks nobody annotated are left out; anything else unexpected is a one-line UserError."""
    path = Path(path)
    try:
        exported = _EXPORT.validate_json(path.read_bytes())
    except OSError as err:
        raise UserError(f"{path}: cannot be read ({err.strerror or err})") from None
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(
            f"{path}: not a Label Studio JSON export ({where}: {first['msg']}); export the "
            "project as JSON"
        ) from None
    answers: dict[str, str] = {}
    for number, task in enumerate(exported, start=1):
        name = f"task {task.id if task.id is not None else f'#{number}'}"
        done = [a for a in task.annotations if not a.was_cancelled]
        if not done:
            continue
        if output_name("id") not in task.data:
            raise UserError(
                f"{path}: {name} has no data.{output_name('id')}; import reads projects made "
                "from `autoannotator export --format label-studio`"
            )
        # The latest answer counts: by time where Label Studio gives one, else list order.
        _, latest = max(
            enumerate(done), key=lambda p: (p[1].updated_at or p[1].created_at or "", p[0])
        )
        chosen = [
            c for r in latest.result if r.type == "choices" for c in r.value.get("choices", [])
        ]
        if len(chosen) != 1:
            raise UserError(f"{path}: {name} has {len(chosen)} choices; one label per text")
        if chosen[0] not in labels:
            raise UserError(
                f"{path}: {name} is labeled {chosen[0]!r}, not one of the task's labels "
                f"({', '.join(labels)})"
            )
        answers[str(task.data[output_name("id")])] = chosen[0]
    return answers


def import_answers(store: RunStore, path: Path) -> dict[str, int]:
    """Save a Label Studio export's answers as human answers of the run; returns counts:
    answered (saved), unchanged (that answer was there), gold (the user's own label stays),
    not_labeled_yet (rows of chunks the run has not reviewed yet: import them again later)."""
    task = store.task()
    answers = read_answers(path, task.labels)
    rows = store.rows().set_index("id")
    unknown = sorted(set(answers) - set(rows.index))
    if unknown:
        raise UserError(f"{path}: row id {unknown[0]!r} is not in {store.root}; another run's?")
    gold = set(store.gold_evidence().index)
    # A chunk is open to answers once reviewed (its hard/ file written): before that, the
    # review step would take a hard/ file made here for its own.
    chunk_of = {
        row_id: int(chunk.stem)
        for chunk in store.voted_chunks()
        if store.hard_chunk(int(chunk.stem)).is_file()
        for row_id in pd.read_parquet(chunk, columns=["id"])["id"]
    }
    counts = {"answered": 0, "unchanged": 0, "gold": 0, "not_labeled_yet": 0}
    log = Answers(store)
    by_chunk: dict[int, dict[str, str]] = {}
    for row_id, label in answers.items():
        if row_id in gold:
            counts["gold"] += 1
        elif row_id not in chunk_of:
            counts["not_labeled_yet"] += 1
        else:
            by_chunk.setdefault(chunk_of[row_id], {})[row_id] = label
    for chunk, chosen in sorted(by_chunk.items()):
        _join_hard(store, chunk, set(chosen))
        for item in hard_items(store, [chunk], everything=True):
            if item.id not in chosen:
                continue
            if item.answer == chosen[item.id]:
                counts["unchanged"] += 1
                continue
            log.answer(item, chosen[item.id])
            counts["answered"] += 1
    return counts


def _join_hard(store: RunStore, chunk: int, ids: set[str]) -> None:
    """Add the rows of `ids` the committee agreed on to hard/<chunk>.parquet, as it decided
    them (source committee), so a human answer replaces them there like any hard sample's."""
    path = store.hard_chunk(chunk)
    hard = pd.read_parquet(path)
    votes = pd.read_parquet(store.chunk_votes(chunk))
    agreed = votes[votes["id"].isin(ids - set(hard["id"]))]
    if agreed.empty:
        return
    slugs = [m.slug for m in store.committee()]
    joined = pd.DataFrame(
        {
            "id": agreed["id"].to_numpy(),
            "chunk": chunk,
            "committee_label": agreed["label"].to_numpy(),
            "votes": [
                json.dumps({s: r[f"{s}.label"] for s in slugs}, ensure_ascii=False)
                for r in agreed.to_dict("records")
            ],
            "label": agreed["label"].to_numpy(),
            "source": Source.COMMITTEE,
        }
    )
    write_parquet(pd.concat([hard, joined], ignore_index=True), path)
