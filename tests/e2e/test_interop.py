"""Export to Label Studio, Hugging Face datasets and plain files; a Label Studio export read
back as human answers, and the run resumed from there."""

from __future__ import annotations

import base64
import io
import json
import shutil
from xml.etree import ElementTree

import datasets
import httpx2
import huggingface_hub
import pandas as pd
import pytest
from huggingface_hub.utils._http import default_client_factory
from typer.testing import CliRunner

from agent.cli.app import app
from agent.hub.local import LocalHub
from agent.pipeline.hardpool import expert_samples
from agent.pipeline.report import read_labels
from agent.pipeline.runner import RunOptions, create_run, is_finished, run_graph
from agent.store.runstore import RunStore
from agent.task import TaskSpec
from sandbox.local import LocalSandbox
from tests.fixtures.keywords import LABELS, write_data

runner = CliRunner()


def make_task(data, **kw) -> TaskSpec:
    base = {
        "description": "sentiment of short texts",
        "labels": LABELS,
        "data_path": str(data),
        "beta": 1000,
        "chunk_size": 10,
        "max_length": 32,
        # The reviewed templates as they are: these tests are not about who writes scripts
        # (auto's probes: tests/unit/scripts/test_codegen.py, test_codegen_kinds, test_demo).
        "codegen": "template",
    }
    return TaskSpec(**{**base, **kw})


def user_data(path, n: int):
    """The keyword data with two more columns of the user's: a number and a note."""
    write_data(path, n)
    frame = pd.read_csv(path, keep_default_na=False)
    frame["score"] = [i / 10 for i in range(n)]
    frame["note"] = [f"note {i}" for i in range(n)]
    frame.to_csv(path, index=False)
    return path


def options(hub_dir) -> RunOptions:
    return RunOptions(hub=LocalHub(hub_dir), sandbox=LocalSandbox(), device="cpu")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, hub_dir) -> RunStore:
    root = tmp_path_factory.mktemp("finished")
    data = user_data(root / "data.csv", 20)
    store = create_run(make_task(data, reviewer="none", chunk_size=32), root / "run")
    run_graph(store, options(hub_dir), resume=False)
    assert is_finished(store)
    return store


def export(store: RunStore, fmt: str, *extra: str):
    result = runner.invoke(app, ["export", str(store.root), "--format", fmt, *extra])
    assert result.exit_code == 0, result.output
    return result


def test_plain_formats_hold_every_column_of_every_row(finished, tmp_path):
    labels = pd.read_parquet(finished.labels_path)
    for fmt, read in (
        ("parquet", pd.read_parquet),
        ("csv", lambda p: pd.read_csv(p, dtype={"text": str, "gold": str, "score": str})),
        ("jsonl", lambda p: pd.read_json(p, lines=True, dtype=False)),
    ):
        target = tmp_path / f"out.{fmt}"
        export(finished, fmt, "--out", str(target))
        table = read(target)
        assert list(table.columns) == list(labels.columns)
        assert table["aa_id"].astype(str).tolist() == labels["aa_id"].tolist()
        assert table["aa_label"].tolist() == labels["aa_label"].tolist()
        # The user's column as read from their CSV (text), written back as it came.
        assert table["score"].astype(str).tolist() == labels["score"].tolist()


def test_label_studio_tasks_carry_every_column_and_a_scored_prediction(finished):
    export(finished, "label-studio")
    folder = finished.root / "export" / "label-studio"
    tasks = json.loads((folder / "tasks.json").read_text())
    labels = read_labels(finished)
    source = finished.source()
    assert len(tasks) == len(labels)
    for task, row, given in zip(
        tasks, labels.to_dict("records"), source.to_dict("records"), strict=True
    ):
        data = task["data"]
        assert data["aa_id"] == row["id"]
        assert data["note"] == given["note"]
        assert data["text"] == (None if pd.isna(given["text"]) else given["text"])
        if pd.isna(row["label"]):  # a blank text: nothing to predict
            assert task["predictions"] == []
            continue
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == row["source"]
        assert prediction["score"] == pytest.approx(row["confidence"])
        (result,) = prediction["result"]
        assert result["type"] == "choices" and result["value"] == {"choices": [row["label"]]}
        assert (result["from_name"], result["to_name"]) == ("label", "text")
    config = ElementTree.fromstring((folder / "config.xml").read_text())
    assert config.find("Text").get("value") == "$text"
    choices = config.find("Choices")
    assert (choices.get("name"), choices.get("toName")) == ("label", "text")
    assert [c.get("value") for c in choices.findall("Choice")] == LABELS


def test_hf_dataset_has_a_class_label_and_a_card(finished):
    export(finished, "hf")
    folder = finished.root / "export" / "hf-dataset"
    dataset = datasets.load_from_disk(str(folder))
    labels = read_labels(finished)
    feature = dataset.features["aa_label"]
    assert isinstance(feature, datasets.ClassLabel) and feature.names == LABELS
    assert [feature.int2str(i) if i is not None else None for i in dataset["aa_label"]] == [
        None if pd.isna(x) else x for x in labels["label"]
    ]
    assert dataset["note"] == finished.source()["note"].tolist()
    card = (folder / "README.md").read_text()
    assert "task_categories:\n- text-classification" in card
    for source, count in labels["source"].value_counts().items():
        assert f"| {source} | {count} |" in card
    assert "## Estimated accuracy" in card and "## LLM calls and cost" in card
    for model in finished.committee():
        assert f"`{model.id}`" in card


class FakeHubHttp:
    """The Hugging Face Hub's HTTP API as far as a dataset push uses it, over one in-memory
    repository: create, validate the card's YAML, preupload (parquet shards by LFS, the rest
    inline), LFS batch and upload, commit, repo info, tree listing, resolve."""

    SHA = "a" * 40

    def __init__(self, repo: str):
        self.repo = repo
        self.files: dict[str, bytes] = {}
        self.lfs: dict[str, bytes] = {}
        self.commits = 0

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        api = f"/api/datasets/{self.repo}"
        # Everything but the YAML check and the LFS storage's presigned upload needs the token.
        open_to_all = path == "/api/validate-yaml" or path.startswith("/upload/")
        if not open_to_all and request.headers.get("authorization") != "Bearer hf_test":
            return httpx2.Response(401, json={"error": "no token"})
        if path == "/api/repos/create":
            return httpx2.Response(
                200, json={"url": f"https://huggingface.co/datasets/{self.repo}"}
            )
        if path == "/api/validate-yaml":
            return httpx2.Response(200, json={})
        if path.startswith(f"{api}/preupload/"):
            files = json.loads(request.content)["files"]
            modes = [
                {"path": f["path"], "shouldIgnore": False,
                 "uploadMode": "lfs" if f["path"].endswith(".parquet") else "regular"}
                for f in files
            ]  # fmt: skip
            return httpx2.Response(200, json={"files": modes})
        if path.endswith(".git/info/lfs/objects/batch"):
            objects = json.loads(request.content)["objects"]
            return httpx2.Response(200, json={"transfer": "basic", "objects": [
                {"oid": o["oid"], "size": o["size"], "authenticated": True,
                 "actions": {"upload": {"href": f"https://lfs.hub/upload/{o['oid']}"}}}
                for o in objects
            ]})  # fmt: skip
        if path.startswith("/upload/"):
            self.lfs[path.rsplit("/", 1)[1]] = request.content
            return httpx2.Response(200)
        if path.startswith(f"{api}/commit/"):
            self.commits += 1
            for line in request.content.decode().splitlines():
                operation = json.loads(line)
                value = operation["value"]
                if operation["key"] == "file":
                    self.files[value["path"]] = base64.b64decode(value["content"])
                elif operation["key"] == "lfsFile":
                    self.files[value["path"]] = self.lfs[value["oid"]]
            return httpx2.Response(
                200,
                json={
                    "commitOid": self.SHA,
                    "commitUrl": f"https://huggingface.co/datasets/{self.repo}/commit/{self.SHA}",
                },
            )
        if "/tree/" in path:
            folder = path.split("/tree/", 1)[1].partition("/")[2]
            entries = [
                {"type": "file", "path": name, "size": len(data), "oid": "b" * 40}
                for name, data in self.files.items()
                if not folder or name.startswith(folder + "/")
            ]
            if folder and not entries:
                return httpx2.Response(404, headers={"x-error-code": "EntryNotFound"})
            return httpx2.Response(200, json=entries)
        if f"/datasets/{self.repo}/resolve/" in path:
            name = path.split("/resolve/", 1)[1].partition("/")[2]
            if name not in self.files:
                return httpx2.Response(404, headers={"x-error-code": "EntryNotFound"})
            return httpx2.Response(200, content=self.files[name], headers={"etag": '"x"'})
        if path.startswith(api):
            siblings = [{"rfilename": name} for name in self.files]
            return httpx2.Response(
                200, json={"id": self.repo, "sha": self.SHA, "siblings": siblings}
            )
        return httpx2.Response(404)


def test_push_to_hub_sends_the_card_and_the_dataset(finished, monkeypatch):
    hub = FakeHubHttp("team/tweets")
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    # The Hub's own chunked transfer (Xet) has its own client; the documented LFS path is
    # what this fake speaks.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    huggingface_hub.set_client_factory(
        lambda: httpx2.Client(transport=httpx2.MockTransport(hub.handle), follow_redirects=True)
    )
    try:
        result = export(finished, "hf", "--push-to-hub", "team/tweets")
    finally:
        huggingface_hub.set_client_factory(default_client_factory)
    assert "pushed to the Hub: team/tweets" in result.output
    card = hub.files["README.md"].decode()
    # The card's text, with the features the dataset push added to its YAML header.
    assert "## How each row was labeled" in card and "class_label:" in card
    shards = [name for name in hub.files if name.startswith("data/") and name.endswith(".parquet")]
    assert shards
    pushed = pd.concat(pd.read_parquet(io.BytesIO(hub.files[name])) for name in shards)
    labels = read_labels(finished)
    names = LABELS
    assert [None if pd.isna(i) else names[int(i)] for i in pushed["aa_label"]] == [
        None if pd.isna(x) else x for x in labels["label"]
    ]


def label_studio_export(tasks: list[dict], answers: dict[str, list[str | None]]) -> list[dict]:
    """What Label Studio's JSON export gives for a project imported from `tasks` (its
    documented shape: every task with its id, data, annotations and predictions), after people
    answered: answers[aa_id] lists one annotation per label in order, None a cancelled one."""
    exported = []
    for number, task in enumerate(tasks, start=1):
        annotations = []
        for index, label in enumerate(answers.get(task["data"]["aa_id"], [])):
            stamp = f"2026-12-03T10:{index:02d}:00.000000Z"
            annotations.append(
                {
                    "id": number * 100 + index,
                    "completed_by": 1,
                    "result": []
                    if label is None
                    else [
                        {
                            "value": {"choices": [label]},
                            "id": f"r{number}-{index}",
                            "from_name": "label",
                            "to_name": "text",
                            "type": "choices",
                            "origin": "manual",
                        }
                    ],
                    "was_cancelled": label is None,
                    "ground_truth": False,
                    "created_at": stamp,
                    "updated_at": stamp,
                    "draft_created_at": None,
                    "lead_time": 3.2,
                    "prediction": {},
                    "result_count": 0,
                    "unique_id": f"u{number}-{index}",
                    "import_id": None,
                    "last_action": None,
                    "bulk_created": False,
                    "task": number,
                    "project": 1,
                    "updated_by": 1,
                    "parent_prediction": None,
                    "parent_annotation": None,
                    "last_created_by": None,
                }
            )
        exported.append(
            {
                "id": number,
                "annotations": annotations,
                "file_upload": "tasks.json",
                "drafts": [],
                "predictions": [number],
                "data": task["data"],
                "meta": {},
                "created_at": "2026-12-03T09:00:00.000000Z",
                "updated_at": "2026-12-03T10:30:00.000000Z",
                "inner_id": number,
                "total_annotations": len(annotations),
                "cancelled_annotations": sum(a["was_cancelled"] for a in annotations),
                "total_predictions": len(task["predictions"]),
                "comment_count": 0,
                "unresolved_comment_count": 0,
                "last_comment_updated_at": None,
                "project": 1,
                "updated_by": 1,
                "comment_authors": [],
            }
        )
    return exported


def test_label_studio_answers_come_back_as_human_labels_and_the_run_resumes(tmp_path, hub_dir):
    data = user_data(tmp_path / "data.csv", 20)
    store = create_run(make_task(data, reviewer="human"), tmp_path / "run")
    truth = pd.read_csv(data, keep_default_na=False)["gold"]
    gold = {str(row): label for row, label in truth.items()}
    run_graph(store, options(hub_dir), resume=False)  # no one to answer: paused at chunk 0
    assert not is_finished(store)

    seen: dict[str, str] = {}
    for round_ in range(10):
        export(store, "label-studio")
        tasks = json.loads((store.root / "export" / "label-studio" / "tasks.json").read_text())
        waiting = [t for t in tasks if t["data"]["aa_source"] == "unreviewed"]
        agreed = [t for t in tasks if t["data"]["aa_source"] == "committee"]
        assert waiting, "paused with nothing to answer"
        answers: dict[str, list[str | None]] = {}
        for task in waiting:
            row = task["data"]["aa_id"]
            wrong = next(label for label in LABELS if label != gold[row])
            # A slip, then the right answer; a cancelled try after it does not count.
            answers[row] = [wrong, gold[row], None]
            seen[row] = gold[row]
        if round_ == 0:
            # A person also corrects a row the committee agreed on.
            row = agreed[0]["data"]["aa_id"]
            other = next(label for label in LABELS if label != agreed[0]["data"]["aa_label"])
            answers[row] = [other]
            seen[row] = other
        exported = tmp_path / f"export-{round_}.json"
        exported.write_text(json.dumps(label_studio_export(tasks, answers)))
        result = runner.invoke(app, ["import", str(store.root), str(exported)])
        assert result.exit_code == 0, result.output
        assert f"{len(answers)} human answers saved" in result.output
        if round_ == 0:
            # What the people answered trains the SLMs like any expert label.
            pool = expert_samples(store, [0]).set_index("id")
            assert set(answers) <= set(pool.index)
            assert (pool.loc[list(answers), "source"] == "human").all()
        run_graph(store, options(hub_dir), resume=True)
        if is_finished(store):
            break
    assert is_finished(store) and round_ >= 1

    labels = read_labels(store).set_index("id")
    human = labels[labels["source"] == "human"]
    assert human["label"].to_dict() == seen
    # Importing the same export again changes nothing.
    again = runner.invoke(app, ["import", str(store.root), str(exported)])
    assert again.exit_code == 0 and "0 human answers saved" in again.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"data": {}}', "not a Label Studio JSON export"),
        (
            '[{"id": 7, "data": {"aa_id": "0"}, "annotations": [{"result": [{"type": "choices", '
            '"value": {"choices": ["maybe"]}}]}]}]',
            "task 7 is labeled 'maybe', not one of the task's labels",
        ),
        (
            '[{"id": 8, "data": {"text": "x"}, "annotations": [{"result": [{"type": "choices", '
            '"value": {"choices": ["neutral"]}}]}]}]',
            "task 8 has no data.aa_id",
        ),
        (
            '[{"id": 9, "data": {"aa_id": "nope"}, "annotations": [{"result": [{"type": '
            '"choices", "value": {"choices": ["neutral"]}}]}]}]',
            "row id 'nope' is not in",
        ),
    ],
)
def test_a_wrong_export_is_one_line_and_changes_nothing(finished, tmp_path, content, message):
    store = RunStore(shutil.copytree(finished.root, tmp_path / "run"))
    before = {p: p.read_bytes() for p in store.hard_chunks()}
    path = tmp_path / "export.json"
    path.write_text(content)
    result = runner.invoke(app, ["import", str(store.root), str(path)])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1
    assert {p: p.read_bytes() for p in store.hard_chunks()} == before
