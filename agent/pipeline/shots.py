"""Retrieval few-shot for the LLM reviewer: which labeled rows of the run it sees before a sample.

For each sample to review, `--review-shots` k labeled rows of the run become its examples
(ReviewItem.examples), shown in the same escaped <text> blocks as the sample. Two layouts
(`ShotLayout`): FIXED (the default) shows every sample of a chunk the same k rows, the most
typical of each label in turn (nearest their label's mean embedding), so the prompt up to the
sample never changes and a llama.cpp server evaluates the examples once rather than once per
sample. The next chunk keeps those rows while they are still as good a choice (`kept_examples`),
since every change of examples costs that evaluation again (about 15 s for 16 on 2 cores).
NEAREST shows each sample its own k nearest rows, described next. Nearest
by cosine similarity of the embedded MiniLM encoder's sentence embeddings, searched with
scikit-learn's NearestNeighbors; each text is embedded once and kept in the run directory
(embeddings.npz), so a resumed run finds the same neighbours and sends the same prompts, which
the LLM cache then answers for free.

The candidates, in priority (`Tier`): the user's known labels (the gold column, on rows marked
as evidence), a person's answers to hard samples, then the rows the whole committee agreed on
(U = 0). A row in several tiers counts once, with its best tier's label. The examples are
balanced: first every label gets its nearest example, from the best tier that has one (when k
is smaller than the number of labels, the labels whose examples are best get them); the other
slots go to the best tier's nearest rows, then the next tier's. A sample is never its own
example. They are shown farthest first, so the nearest stands right before the sample.

The pool for chunk c is fixed by what chunk c's review may read — gold, human answers of earlier
chunks, committee rows of chunks up to c — so a resumed chunk sees the pool it saw before.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from enum import IntEnum
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from agent.committee.selection import encode
from agent.domain import ShotLayout, Source
from agent.pipeline.review import Example, ReviewItem
from agent.store.runstore import RunStore, atomic_path, read_json, write_json

log = logging.getLogger(__name__)

# texts -> unit-length sentence embeddings, one row per text (the embedded MiniLM: `encode`).
Embed = Callable[[Sequence[str]], np.ndarray]


class Tier(IntEnum):
    """Where an example's label comes from; a lower tier is preferred."""

    GOLD = 0  # the user's known label (gold column, row marked as evidence)
    HUMAN = 1  # a person's answer to a hard sample
    COMMITTEE = 2  # the whole committee agreed (U = 0)


def labeled_rows(store: RunStore, chunk: int) -> pd.DataFrame:
    """id, text, label, tier of the rows chunk `chunk`'s review may show as examples.

    Gold labels only where the input marks the row as evidence (an `evidence` column); without
    that column the gold column is what the run is evaluated against, never shown.
    """
    labels = store.task().labels
    rows = store.rows()
    frames = []
    if "gold" in rows.columns and "evidence" in rows.columns:
        evidence = rows["evidence"].fillna(False).astype(bool) & rows["gold"].notna()
        gold = rows[evidence]
        frames.append(pd.DataFrame({"id": gold["id"], "label": gold["gold"], "tier": Tier.GOLD}))
    for earlier in range(chunk):
        path = store.hard_chunk(earlier)
        if path.is_file():
            hard = pd.read_parquet(path, columns=["id", "label", "source"])
            hard = hard[hard["source"] == Source.HUMAN]
            frames.append(
                pd.DataFrame({"id": hard["id"], "label": hard["label"], "tier": Tier.HUMAN})
            )
    for voted in range(chunk + 1):
        path = store.chunk_votes(voted)
        if path.is_file():
            votes = pd.read_parquet(path, columns=["id", "label", "uncertainty"])
            sure = votes[votes["uncertainty"] == 0]
            frames.append(
                pd.DataFrame({"id": sure["id"], "label": sure["label"], "tier": Tier.COMMITTEE})
            )
    columns = ["id", "text", "label", "tier"]
    if not frames:
        return pd.DataFrame(columns=columns)
    found = pd.concat(frames, ignore_index=True).astype({"id": str, "label": str})
    found = found.sort_values("tier", kind="stable").drop_duplicates("id")
    texts = rows.astype({"id": str}).set_index("id")["text"]
    found["text"] = texts.reindex(found["id"]).to_numpy()
    found = found[found["text"].notna() & found["label"].isin(labels)]
    return found[columns].reset_index(drop=True)


class RunEmbeddings:
    """Sentence embeddings of a run's texts by row id, each computed once and kept in one file
    (ids and vectors together, written atomically)."""

    def __init__(self, path: Path, embed: Embed = encode) -> None:
        self.path = Path(path)
        self.embed = embed

    def _load(self) -> tuple[list[str], np.ndarray | None]:
        if not self.path.is_file():
            return [], None
        with np.load(self.path, allow_pickle=False) as saved:
            return [str(i) for i in saved["ids"]], saved["vectors"]

    def vectors(self, ids: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """One unit-length row per id, embedding (and keeping) only the ids not seen before."""
        known, matrix = self._load()
        position = {row_id: n for n, row_id in enumerate(known)}
        todo = {}
        for row_id, text in zip(ids, texts, strict=True):
            if row_id not in position:
                todo[row_id] = text
        if todo:
            fresh = np.asarray(self.embed(list(todo.values())), dtype=np.float32)
            matrix = fresh if matrix is None else np.vstack([matrix, fresh])
            for row_id in todo:
                position[row_id] = len(known)
                known.append(row_id)
            with atomic_path(self.path) as tmp, tmp.open("wb") as fh:
                np.savez(fh, ids=np.array(known, dtype=str), vectors=matrix)
        if matrix is None:  # no ids asked for and none kept
            return np.zeros((0, 0), dtype=np.float32)
        return matrix[[position[row_id] for row_id in ids]]


class Index:
    """Nearest neighbours by cosine distance among some candidate rows."""

    def __init__(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        self.rows = rows
        self.search = NearestNeighbors(metric="cosine", algorithm="brute").fit(vectors[rows])

    def nearest(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(distances, candidate rows) of each query's n nearest, nearest first."""
        distances, found = self.search.kneighbors(queries, n_neighbors=min(n, len(self.rows)))
        return distances, self.rows[found]


# The longest text shown as an example: k of them (16 at most by default) must fit beside the
# instructions and the sample in a 4,096-token context (about 4 characters a token), and a long
# example teaches no more than a short one of the same label. Longer candidates are skipped.
MAX_EXAMPLE_CHARS = 600


class ExampleSelector:
    """The k nearest candidates of each query, label-balanced, the better tier first; only
    candidates of at most MAX_EXAMPLE_CHARS characters are shown."""

    def __init__(self, candidates: pd.DataFrame, vectors: np.ndarray, k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        self.k = k
        short = (candidates["text"].astype(str).str.len() <= MAX_EXAMPLE_CHARS).to_numpy()
        candidates, vectors = candidates[short], vectors[short]
        self.candidates = candidates.reset_index(drop=True)
        self.ids = self.candidates["id"].astype(str).to_numpy()
        self.labels = self.candidates["label"].astype(str).to_numpy()
        self.texts = self.candidates["text"].astype(str).tolist()
        self.tiers = sorted({int(t) for t in self.candidates["tier"]})
        self.vectors = vectors
        # One index per tier, and per tier and label; each holds candidate row numbers.
        self._tier_index: dict[int, Index] = {}
        self._label_index: dict[tuple[int, str], Index] = {}
        for tier in self.tiers:
            in_tier = (self.candidates["tier"] == tier).to_numpy()
            self._tier_index[tier] = Index(vectors, np.flatnonzero(in_tier))
            for label in dict.fromkeys(self.labels[in_tier]):
                rows = np.flatnonzero(in_tier & (self.labels == label))
                self._label_index[(tier, str(label))] = Index(vectors, rows)

    def select(self, queries: np.ndarray, exclude: Sequence[str]) -> list[list[Example]]:
        """Each query's examples, farthest first; `exclude[i]` (the sample's own id) is never
        one of query i's."""
        if len(queries) == 0:
            return []
        # One more than can be taken, for the sample itself.
        by_label = {key: index.nearest(queries, 2) for key, index in self._label_index.items()}
        by_tier = {
            t: index.nearest(queries, 2 * self.k + 1) for t, index in self._tier_index.items()
        }
        chosen = []
        for q, own in enumerate(exclude):
            # Per label, its nearest in the best tier that has one: (tier, distance, row).
            best: dict[str, tuple[int, float, int]] = {}
            for (tier, label), (distances, rows) in by_label.items():  # tiers in order
                if label in best:
                    continue
                hit = self._first_other(distances[q], rows[q], own)
                if hit is not None:
                    best[label] = (tier, *hit)
            picked = {row: distance for _, distance, row in sorted(best.values())[: self.k]}
            for tier in self.tiers:
                distances, rows = by_tier[tier]
                for distance, row in zip(distances[q], rows[q], strict=True):
                    if len(picked) < self.k and self.ids[row] != own and row not in picked:
                        picked[int(row)] = float(distance)
            ordered = sorted(picked, key=lambda row: (-picked[row], row))
            chosen.append([Example(self.texts[row], self.labels[row]) for row in ordered])
        return chosen

    def typical(self, exclude: Sequence[str] = ()) -> list[Example]:
        """k examples for every sample: per label its most typical candidates (nearest the
        label's mean embedding), the better tier first; the labels take turns, in the order of
        their first candidate, so each label is shown before any is shown twice. None of
        `exclude` (the samples they are shown to) is one."""
        return self.examples(self.typical_rows(exclude))

    def examples(self, rows: Sequence[int]) -> list[Example]:
        return [Example(self.texts[row], self.labels[row]) for row in rows]

    def rows_of(
        self, ids: Sequence[str], labels: Sequence[str], exclude: Sequence[str]
    ) -> list[int] | None:
        """The candidate rows of `ids`, in order; None when one is no longer a candidate with
        its label in `labels`, or is one of `exclude`."""
        position = {str(row_id): row for row, row_id in enumerate(self.ids)}
        if any(row_id not in position for row_id in ids) or set(ids) & set(exclude):
            return None
        rows = [position[row_id] for row_id in ids]
        if [str(self.labels[row]) for row in rows] != list(labels):
            return None
        return rows

    def composition(self, rows: Sequence[int]) -> Counter[tuple[str, int]]:
        """How many of `rows` show each (label, tier)."""
        tiers = self.candidates["tier"].to_numpy()
        return Counter((str(self.labels[row]), int(tiers[row])) for row in rows)

    def typical_rows(self, exclude: Sequence[str] = ()) -> list[int]:
        """The candidate rows `typical` shows, in order."""
        excluded = set(exclude)
        ranked: dict[str, list[int]] = {}
        for label in dict.fromkeys(self.labels):
            centre = self.vectors[self.labels == label].mean(axis=0, keepdims=True)
            ranked[label] = [
                int(row)
                for tier in self.tiers
                if (tier, label) in self._label_index
                for row in self._label_index[(tier, label)].nearest(centre, self.k + len(excluded))[
                    1
                ][0]
                if self.ids[row] not in excluded
            ]
        turns = [
            rows[rank] for rank in range(self.k) for rows in ranked.values() if rank < len(rows)
        ]
        return turns[: self.k]

    def _first_other(
        self, distances: np.ndarray, rows: np.ndarray, own: str
    ) -> tuple[float, int] | None:
        for distance, row in zip(distances, rows, strict=True):
            if self.ids[row] != own:
                return float(distance), int(row)
        return None


def attach_examples(
    store: RunStore,
    chunk: int,
    items: list[ReviewItem],
    k: int,
    embed: Embed = encode,
    layout: ShotLayout = ShotLayout.FIXED,
) -> list[ReviewItem]:
    """`items` with their k examples from the run (unchanged when k is 0 or none qualify): the
    same typical ones for all (ShotLayout.FIXED), or each item's nearest (ShotLayout.NEAREST)."""
    if k < 1 or not items:
        return items
    candidates = labeled_rows(store, chunk)
    if candidates.empty:
        log.info("chunk %d: no labeled rows to show the reviewer as examples yet", chunk)
        return items
    # The fixed layout looks only at the candidates; the nearest, at the samples too.
    queries = items if layout == ShotLayout.NEAREST else []
    ids = [*candidates["id"], *(item.id for item in queries)]
    texts = [*candidates["text"], *(item.text for item in queries)]
    vectors = RunEmbeddings(store.embeddings_path, embed).vectors(ids, texts)
    selector = ExampleSelector(candidates, vectors[: len(candidates)], k)
    if layout == ShotLayout.FIXED:
        chosen = [kept_examples(store, chunk, selector, [item.id for item in items])] * len(items)
    else:
        chosen = selector.select(vectors[len(candidates) :], [item.id for item in items])
    return [
        replace(item, examples=tuple(examples))
        for item, examples in zip(items, chosen, strict=True)
    ]


def kept_examples(
    store: RunStore, chunk: int, selector: ExampleSelector, exclude: Sequence[str]
) -> list[Example]:
    """The fixed layout's examples for chunk `chunk`: the rows an earlier review of this chunk
    showed, else those of the chunk before, while each is still a candidate with its label, none
    is one of `exclude`, and they show as many rows of each label and tier as the most typical
    rows would (so gold or a person's answers that arrive later still replace committee rows);
    otherwise the most typical rows. The first choice for a chunk is kept in the run directory,
    so a resumed chunk shows the same examples."""
    fresh = selector.typical_rows(exclude)
    wanted = selector.composition(fresh)
    chosen = fresh
    for path in _shown_files(store, chunk):
        shown = read_json(path)
        rows = selector.rows_of(shown["ids"], shown["labels"], exclude)
        if rows is not None and selector.composition(rows) == wanted:
            chosen = rows
            break
    path = store.shots_chunk(chunk)
    if not path.is_file():
        shown = {
            "ids": [str(selector.ids[row]) for row in chosen],
            "labels": [str(selector.labels[row]) for row in chosen],
        }
        write_json(shown, path)
    return selector.examples(chosen)


def shown_ids(store: RunStore, chunk: int) -> set[str]:
    """The ids of the examples chunk `chunk`'s reviews showed, or before any review of it,
    those of the chunk before (which it keeps while they are as good: kept_examples)."""
    files = _shown_files(store, chunk)
    return set(read_json(files[0])["ids"]) if files else set()


def _shown_files(store: RunStore, chunk: int) -> list[Path]:
    """The examples kept for chunk `chunk`, then for the chunk before: those kept so far."""
    chunks = [chunk, chunk - 1] if chunk else [chunk]
    return [path for c in chunks if (path := store.shots_chunk(c)).is_file()]
