"""The hard-sample pool D_hard: routed samples, their review, and what fine-tuning may use.

hard/<chunk>.parquet holds one row per routed sample of that chunk with the reviewer's
verdict and, where the endpoint gave log-probs, its probability per label (`probabilities`, a
JSON object; null without). With `review_debias` the verdict is the label its probabilities
name once the reviewer's lean is divided out (agent.committee.bias; the prior is the mean of
its answers' distributions in this chunk's routed rows and every earlier chunk's): `answer` and
`answer_probabilities` keep what it said, `label` and `probabilities` what the run takes. The
audit of a chunk uses the same prior, so the reviewer measured there is the one that labels
the routed rows. A reviewer that is off (unreviewed), over budget (committee-capped)
or unsure (needs_human) leaves the committee's label in place and says so in `source`; only
samples with an expert label (llm, oracle, human) train SLMs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from agent.committee import bias
from agent.committee.selection import encode
from agent.domain import EXPERT_SOURCES, CommitteeMember, Route, Routing, ShotLayout, Source
from agent.pipeline.review import ReviewItem
from agent.pipeline.shots import Embed, attach_examples, shown_ids
from agent.store.runstore import RunStore, write_parquet

# Items handed to the reviewer at a time, so progress shows during review: a whole number of
# its batches, so a resumed chunk sends the same prompts and the cache answers them.
PROGRESS_STEP = 16
# The audit's cap on agreed rows per chunk.
AUDIT_MAX_PER_CHUNK = 50


def progress_step(reviewer, items: int) -> int:
    """Samples handed to the reviewer at once, of `items`: whole batches, enough for every
    concurrent call; all of them where the reviewer sends a Batch API job (one per chunk)."""
    if getattr(reviewer, "batch_jobs", None) is not None:
        return max(1, items)
    batch = getattr(reviewer, "batch_size", 1)
    return batch * max(1, PROGRESS_STEP // batch, getattr(reviewer, "concurrency", 1))


def review_chunk(
    store: RunStore,
    reviewer,
    committee: Sequence[CommitteeMember],
    chunk: int,
    progress=lambda done, total: None,
    embed: Embed = encode,
) -> dict:
    """Review the routed samples of one chunk; returns counts for progress and the pool.

    Rows whose label the user gave as evidence (`--gold-column`) are never sent: they keep it.
    A reviewer with `shots` gets each sample with that many labeled rows of the run as
    examples (agent.pipeline.shots), their texts embedded by `embed`.
    """
    target = store.hard_chunk(chunk)
    if target.is_file():
        hard = pd.read_parquet(target)
        return {"hard": len(hard), "expert": int(hard["source"].isin(EXPERT_SOURCES).sum())}
    started = time.perf_counter()
    votes = pd.read_parquet(store.chunk_votes(chunk))
    known = set(store.gold_evidence().index)
    routed = votes[(votes["route"] == Route.REVIEW) & ~votes["id"].isin(known)]
    if store.task().routing == Routing.MARGIN and "margin" in routed:
        # Narrowest margin first: measured, the rows a review most often changes for the better.
        routed = routed.sort_values("margin", kind="stable")
    elif "gain" in routed and routed["gain"].notna().all():
        # Largest expected gain first, so a budget that runs out leaves the least to lose.
        routed = routed.sort_values("gain", ascending=False, kind="stable")
    items = _items(store, committee, chunk, routed)
    if reviewer is not None:
        items = _with_examples(store, reviewer, chunk, items, embed)
    answers, sources, answer_probabilities = _ask(reviewer, items, progress)
    verdict_labels, probabilities = _debiased(store, chunk, answers, answer_probabilities)
    hard = pd.DataFrame(
        {
            "id": routed["id"].to_numpy(),
            "chunk": chunk,
            "committee_label": routed["label"].to_numpy(),
            "votes": [json.dumps(i.votes, ensure_ascii=False) for i in items],
            "label": [
                v if v is not None else c
                for v, c in zip(verdict_labels, routed["label"], strict=True)
            ],
            "source": sources,
            "probabilities": probabilities,
            "answer": answers,
            "answer_probabilities": answer_probabilities,
        }
    )
    write_parquet(hard, target)
    store.log_timing("review", time.perf_counter() - started, chunk=chunk, samples=len(items))
    return {"hard": len(hard), "expert": int(hard["source"].isin(EXPERT_SOURCES).sum())}


def audit_chunk(
    store: RunStore,
    reviewer,
    committee: Sequence[CommitteeMember],
    chunk: int,
    embed: Embed = encode,
) -> int:
    """Let the reviewer also label rows whose answer is known or likely, after the routed ones
    (so the budget goes to those first), and measure it there (audit/<chunk>.parquet):

    - every gold row the committee routed: the reviewer measured against the truth on the kind
      of row it is asked about (as many calls as the user gave gold rows, at most);
    - `audit_share` of the rows the committee agreed on, up to AUDIT_MAX_PER_CHUNK: its reliability
      where the truth is likely, which anchors the estimate when no gold exists.

    Gold rows keep their label whatever the reviewer says. The reviewer is asked as it is on
    routed rows, examples included, so what is measured is the reviewer that labels them. An
    agreed row shown as an example is not audited: its label is in the prompt, and asked with
    other examples it would make a llama.cpp server evaluate a second prompt (~10 s a chunk).
    Returns how many rows were audited."""
    target = store.audit_chunk(chunk)
    if target.is_file():
        return len(pd.read_parquet(target))
    task = store.task()
    if reviewer is None:
        return 0
    votes = pd.read_parquet(store.chunk_votes(chunk))
    gold = votes["id"].isin(store.gold_evidence().index)
    routed_gold = votes[gold & (votes["route"] == Route.REVIEW)]
    agreed = votes[~gold & (votes["route"] == Route.DIRECT)]
    agreed = agreed[~agreed["id"].isin(shown_ids(store, chunk))]
    picked = pd.concat(
        [
            routed_gold,
            _sample(agreed, round(len(agreed) * task.audit_share), task.seed + chunk),
        ]
    )
    items = _with_examples(store, reviewer, chunk, _items(store, committee, chunk, picked), embed)
    answers, sources, answer_probabilities = _ask(reviewer, items, lambda d, t: None)
    labels, probabilities = _debiased(store, chunk, answers, answer_probabilities)
    audit = pd.DataFrame(
        {
            "id": picked["id"].to_numpy(),
            "chunk": chunk,
            "label": labels,
            "source": sources,
            "probabilities": probabilities,
            "answer": answers,
            "answer_probabilities": answer_probabilities,
        }
    )
    write_parquet(audit, target)
    return len(audit)


def _debiased(
    store: RunStore, chunk: int, answers: list, probabilities: list[str | None]
) -> tuple[list, list[str | None]]:
    """Each verdict as the run takes it: with `review_debias` and a prior (the reviewer's mean
    distribution over its answers in the routed rows of every chunk up to `chunk`: the hard/
    files written so far, plus these answers while this chunk's is not), the label its
    probabilities name once the prior is divided out, and those probabilities; else the answer
    as given."""
    task = store.task()
    if not task.review_debias:
        return answers, probabilities
    earlier = []
    for path in store.hard_chunks():
        if int(path.stem) <= chunk:
            hard = pd.read_parquet(path)
            if "answer_probabilities" in hard:
                earlier += hard["answer_probabilities"].tolist()
    with_these = earlier if store.hard_chunk(chunk).is_file() else earlier + probabilities
    _, said = _distributions(with_these, task.labels)
    prior = bias.answer_prior(said)
    rows, given = _distributions(probabilities, task.labels)
    if prior is None or not rows:
        return answers, probabilities
    corrected = bias.prior_corrected(given, prior)
    decided, decided_probabilities = list(answers), list(probabilities)
    for i, distribution in zip(rows, corrected, strict=True):
        decided[i] = task.labels[int(distribution.argmax())]
        decided_probabilities[i] = json.dumps(
            {y: round(float(p), 6) for y, p in zip(task.labels, distribution, strict=True)}
        )
    return decided, decided_probabilities


def _distributions(probabilities: list[str | None], labels: list[str]) -> tuple[list, np.ndarray]:
    """The positions that carry probabilities (JSON objects) and those as rows in label order."""
    given = {i: json.loads(p) for i, p in enumerate(probabilities) if isinstance(p, str)}
    found = [[p.get(y, 0.0) for y in labels] for p in given.values()]
    return list(given), np.array(found, dtype=float).reshape(-1, len(labels))


def _with_examples(
    store: RunStore, reviewer, chunk: int, items: list[ReviewItem], embed: Embed
) -> list[ReviewItem]:
    """The items with the examples a reviewer with `shots` shows (agent.pipeline.shots)."""
    layout = getattr(reviewer, "shot_layout", ShotLayout.FIXED)
    return attach_examples(store, chunk, items, getattr(reviewer, "shots", 0), embed, layout)


def _sample(rows: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    size = min(size, AUDIT_MAX_PER_CHUNK, len(rows))  # the cap binds on chunks over 1,000 rows
    return rows.sample(n=size, random_state=seed) if size else rows.iloc[:0]


def _items(
    store: RunStore, committee: Sequence[CommitteeMember], chunk: int, rows: pd.DataFrame
) -> list[ReviewItem]:
    texts = pd.read_parquet(store.input_chunk(chunk)).set_index("id")["text"]
    slugs = [m.slug for m in committee]
    return [
        ReviewItem(id=row["id"], text=texts[row["id"]], votes={s: row[f"{s}.label"] for s in slugs})
        for row in rows.to_dict("records")
    ]


def _ask(reviewer, items: list[ReviewItem], progress) -> tuple[list, list[Source], list]:
    """The reviewer's label (None: no usable answer), source and probabilities (a JSON object,
    or None) for each item, in order."""
    if reviewer is None:
        return [None] * len(items), [Source.UNREVIEWED] * len(items), [None] * len(items)
    verdicts = []
    step = progress_step(reviewer, len(items))
    for start in range(0, len(items), step):
        verdicts += reviewer.review(items[start : start + step])
        progress(len(verdicts), len(items))
    if [v.id for v in verdicts] != [i.id for i in items]:
        raise RuntimeError(f"reviewer {reviewer.name} returned verdicts out of order")
    sources = [
        v.source if v.label is not None or v.source == Source.CAPPED else Source.NEEDS_HUMAN
        for v in verdicts
    ]
    probabilities = [
        None if v.label is None or v.probabilities is None else json.dumps(v.probabilities)
        for v in verdicts
    ]
    return [v.label for v in verdicts], sources, probabilities


def expert_samples(store: RunStore, chunks: list[int]) -> pd.DataFrame:
    """Reviewed hard samples of the given chunks with their text: the fine-tuning set."""
    frames = []
    for chunk in chunks:
        hard = pd.read_parquet(store.hard_chunk(chunk))
        hard = hard[hard["source"].isin(EXPERT_SOURCES)]
        texts = pd.read_parquet(store.input_chunk(chunk)).set_index("id")["text"]
        frames.append(hard.assign(text=texts.loc[hard["id"]].to_numpy()))
    if not frames:
        return pd.DataFrame(columns=["id", "chunk", "text", "label", "source"])
    return pd.concat(frames, ignore_index=True)


def gold_samples(store: RunStore, chunks: list[int]) -> pd.DataFrame:
    """The user's gold rows (`--gold-column`) the committee routed in the given chunks, with
    their text and label: hard samples whose expert label the user gave, so they train the
    SLMs like a reviewer's answer (source `gold`)."""
    known = store.gold_evidence()
    frames = []
    for chunk in chunks if len(known) else []:
        votes = pd.read_parquet(store.chunk_votes(chunk), columns=["id", "route"])
        routed = votes[(votes["route"] == Route.REVIEW) & votes["id"].isin(known.index)]
        texts = pd.read_parquet(store.input_chunk(chunk)).set_index("id")["text"]
        frames.append(
            pd.DataFrame(
                {
                    "id": routed["id"].to_numpy(),
                    "chunk": chunk,
                    "text": texts.loc[routed["id"]].to_numpy(),
                    "label": known.loc[routed["id"]].to_numpy(),
                    "source": Source.GOLD,
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=["id", "chunk", "text", "label", "source"])
    return pd.concat(frames, ignore_index=True)
