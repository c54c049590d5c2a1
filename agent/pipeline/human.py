"""Human answers for hard samples: which still need a person, and saving each answer at once.

An answer is written into hard/<chunk>.parquet (label, source=human), which is what the run
already reads: the fine-tuning pool counts it as expert, and the labels/report take it over
the committee's and the LLM's. human/answers.json keeps what each answer replaced, so undo
restores the row exactly, also after the console was closed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from agent.domain import EXPERT_SOURCES, NEEDS_HUMAN, Source
from agent.store.runstore import RunStore, read_json, write_json, write_parquet

# A reviewer's label shown as its suggestion; other sources hold the committee's vote.
SUGGESTING = (Source.LLM, Source.ORACLE)


@dataclass(frozen=True)
class HumanItem:
    id: str
    chunk: int
    text: str
    votes: dict[str, str]  # model slug -> task label
    committee_label: str
    source: str
    suggestion: str | None  # the LLM's (or oracle's) label, when it gave one
    answer: str | None  # the human's label, when already answered

    def to_json(self) -> dict:
        return self.__dict__.copy()

    @classmethod
    def from_json(cls, data: dict) -> HumanItem:
        return cls(**data)


class Answers:
    """The run's human answers; each call to `answer` or `undo` is on disk when it returns."""

    def __init__(self, store: RunStore):
        self.store = store
        self.path = store.human_answers_path
        self._log: list[dict] = read_json(self.path)["answers"] if self.path.is_file() else []

    def answer(self, item: HumanItem, label: str) -> None:
        hard = self._hard(item.chunk)
        row = self._row(hard, item)
        entry = {
            "id": item.id,
            "chunk": item.chunk,
            "label": label,
            "replaced": {"label": hard.at[row, "label"], "source": hard.at[row, "source"]},
        }
        hard.loc[row, ["label", "source"]] = [label, Source.HUMAN]
        self._save(hard, item.chunk, [*self._log, entry])

    def undo(self) -> dict | None:
        """Take back the latest answer; returns it, or None when there is none."""
        if not self._log:
            return None
        entry = self._log[-1]
        hard = self._hard(entry["chunk"])
        row = hard.index[hard["id"] == entry["id"]][0]
        hard.loc[row, ["label", "source"]] = [
            entry["replaced"]["label"],
            entry["replaced"]["source"],
        ]
        self._save(hard, entry["chunk"], self._log[:-1])
        return entry

    def __len__(self) -> int:
        return len(self._log)

    def _hard(self, chunk: int) -> pd.DataFrame:
        return pd.read_parquet(self.store.hard_chunk(chunk))

    @staticmethod
    def _row(hard: pd.DataFrame, item: HumanItem):
        rows = hard.index[hard["id"] == item.id]
        if len(rows) != 1:
            raise KeyError(f"sample {item.id} is not in hard/{item.chunk:06d}.parquet")
        return rows[0]

    def _save(self, hard: pd.DataFrame, chunk: int, log: list[dict]) -> None:
        # The parquet is what the run reads, so it goes first; the log only serves undo.
        write_parquet(hard, self.store.hard_chunk(chunk))
        write_json({"answers": log}, self.path)
        self._log = log


def hard_items(store: RunStore, chunks: list[int] | None = None, everything: bool = False):
    """The hard samples a human should see: those no expert labeled, or all with `everything`."""
    paths = [store.hard_chunk(c) for c in chunks] if chunks is not None else store.hard_chunks()
    items: list[HumanItem] = []
    for path in paths:
        if not path.is_file():
            continue
        chunk = int(path.stem)
        hard = pd.read_parquet(path)
        if not everything:
            hard = hard[hard["source"].isin(NEEDS_HUMAN)]
        if hard.empty:
            continue
        texts = pd.read_parquet(store.input_chunk(chunk)).set_index("id")["text"]
        for row in hard.to_dict("records"):
            items.append(
                HumanItem(
                    id=str(row["id"]),
                    chunk=chunk,
                    text=str(texts[row["id"]]),
                    votes=json.loads(row["votes"]),
                    committee_label=str(row["committee_label"]),
                    source=str(row["source"]),
                    suggestion=str(row["label"]) if row["source"] in SUGGESTING else None,
                    answer=str(row["label"]) if row["source"] == Source.HUMAN else None,
                )
            )
    return items


def expert_count(store: RunStore, chunk: int) -> int:
    hard = pd.read_parquet(store.hard_chunk(chunk))
    return int(hard["source"].isin(EXPERT_SOURCES).sum())
