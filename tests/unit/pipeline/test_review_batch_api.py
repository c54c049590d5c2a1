"""--review-batch-api: a chunk's opening review requests go to the endpoint as one Batch API job
(agent.llm.batch), with the same verdicts, cache, ledger and budget as call by call, at the
batch price, and a job in flight survives the run being stopped."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
import pytest

from agent.domain import CommitteeMember, Source
from agent.llm.batch import BATCH_PRICE_SHARE, Polling
from agent.llm.client import LLMClient
from agent.llm.endpoint import Endpoint, LLMUnavailable
from agent.llm.pricing import Budget, Price
from agent.pipeline.annotate import vote_chunk
from agent.pipeline.hardpool import PROGRESS_STEP, review_chunk
from agent.pipeline.review import LLMReviewer
from agent.pipeline.runner import RunOptions, open_reviewer
from agent.store.runstore import InputError, RunStore, prepare_input, write_parquet
from agent.task import TaskSpec
from tests.fixtures.keywords import LABELS, WORDS
from tests.fixtures.llm import FakeOpenAI
from tests.unit.pipeline.test_review_concurrency import items

PRICE = Price(input=1.0, output=4.0)
FAST = Polling(first_s=0.01, max_s=0.02, timeout_s=5.0)


def reviewer(
    fake: FakeOpenAI,
    run_dir: Path,
    batch_api: bool,
    batch_size: int = 1,
    polling: Polling = FAST,
    **budget,
) -> LLMReviewer:
    endpoint = Endpoint(base_url=fake.base_url, api_key="test", model="fake")
    client = LLMClient.for_endpoint(endpoint, run_dir, price=PRICE, budget=Budget(**budget))
    return LLMReviewer(
        client,
        LABELS,
        "sentiment of short texts",
        batch_size=batch_size,
        batch_jobs=run_dir / "batches" if batch_api else None,
        polling=polling,
    )


def ledger(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("batch_size", [1, 4])
def test_one_job_gives_the_verdicts_calls_give_at_the_batch_price(tmp_path, batch_size):
    samples = items(21)
    with FakeOpenAI(LABELS, WORDS, count_tokens=True) as fake:
        by_calls = reviewer(fake, tmp_path / "calls", False, batch_size).review(samples)
        called = fake.direct_calls
        by_job = reviewer(fake, tmp_path / "job", True, batch_size).review(samples)
        assert fake.direct_calls == called  # the job answered every request
        assert len(fake.batches) == 1
    assert [(v.id, v.label, v.source) for v in by_job] == [
        (v.id, v.label, v.source) for v in by_calls
    ]
    assert all(v.source == Source.LLM for v in by_job)
    paid = [e for e in ledger(tmp_path / "job") if not e["cache_hit"]]
    assert len(paid) == called and all(e["batch"] for e in paid)
    cost = {
        run: sum(e["cost_usd"] for e in ledger(tmp_path / run) if not e["cache_hit"])
        for run in ("calls", "job")
    }
    assert cost["job"] == pytest.approx(BATCH_PRICE_SHARE * cost["calls"])


def test_a_stopped_run_waits_for_its_job_again_instead_of_paying_twice(tmp_path):
    samples = items(10)
    waiting = Polling(first_s=0.01, max_s=0.02, timeout_s=0.3)
    with FakeOpenAI(LABELS, WORDS, polls_to_finish=10**6) as fake:
        with pytest.raises(LLMUnavailable, match="resume"):
            reviewer(fake, tmp_path, True, polling=waiting).review(samples)
        assert len(list((tmp_path / "batches").glob("*.json"))) == 1
        assert not (tmp_path / "ledger.jsonl").exists()  # nothing answered, nothing paid
        fake.polls_to_finish = 0
        verdicts = reviewer(fake, tmp_path, True).review(samples)
        assert len(fake.batches) == 1 and fake.direct_calls == 0
    assert [v.label for v in verdicts] == [WORDS[i.text.split()[-1]] for i in samples]


def test_the_call_cap_holds_for_a_job(tmp_path):
    samples = items(12)
    with FakeOpenAI(LABELS, WORDS) as fake:
        verdicts = reviewer(fake, tmp_path, True, max_calls=4).review(samples)
        assert fake.direct_calls == 0
    paid = [e for e in ledger(tmp_path) if not e["cache_hit"]]
    assert len(paid) == 4
    sources = [v.source for v in verdicts]
    assert sources.count(Source.CAPPED) and sources.count(Source.CAPPED) + sources.count(
        Source.LLM
    ) == len(samples)


def test_requests_the_job_failed_are_asked_one_by_one(tmp_path):
    samples = items(6)
    # The fake's first two answers are 429s: inside the job, those two lines fail.
    with FakeOpenAI(LABELS, WORDS, rate_limit_first=2) as fake:
        verdicts = reviewer(fake, tmp_path, True).review(samples)
        assert fake.rejected == 2 and fake.direct_calls == 2
    assert [v.label for v in verdicts] == [WORDS[i.text.split()[-1]] for i in samples]


def _task(tmp_path: Path) -> tuple[TaskSpec, RunStore]:
    data = tmp_path / "rows.csv"
    data.write_text("text\ngood\nbad\n")
    task = TaskSpec(
        description="sentiment", labels=LABELS, data_path=str(data), review_batch_api=True
    )
    return task, RunStore.create(tmp_path / "run", task, prepare_input(task))


def test_the_run_sends_its_jobs_to_the_run_directory_and_refuses_the_local_server(tmp_path):
    task, store = _task(tmp_path)
    options = RunOptions(hub=None, sandbox=None)  # the reviewer needs neither
    with ExitStack() as stack:
        remote = Endpoint(base_url="http://127.0.0.1:9/v1", api_key="test", model="fake")
        opened = open_reviewer(task, store, options, stack, endpoint=remote)
        assert opened.batch_jobs == store.batch_jobs_dir
        local = Endpoint(base_url=remote.base_url, api_key="-", model="fake", local=True)
        with pytest.raises(InputError, match="--review-batch-api needs a remote endpoint"):
            open_reviewer(task, store, options, stack, endpoint=local)


def test_a_chunk_is_one_job_however_many_progress_steps_it_takes(tmp_path):
    samples = items(3 * PROGRESS_STEP)
    data = tmp_path / "rows.csv"
    pd.DataFrame({"text": [s.text for s in samples]}).to_csv(data, index=False)
    task = TaskSpec(description="sentiment", labels=LABELS, data_path=str(data))
    store = RunStore.create(tmp_path / "run", task, prepare_input(task))
    store.cut_chunk(0, len(samples))
    rows = pd.read_parquet(store.input_chunk(0))
    members = [
        CommitteeMember(id=f"test/m{i}", slug=f"m{i}", source="", labels=LABELS,
                        label_map={y: y for y in LABELS})
        for i in range(len(LABELS))
    ]  # fmt: skip
    for member, label in zip(members, LABELS, strict=True):  # three votes, three labels
        votes = pd.DataFrame({"id": rows["id"], "label": label, "score": 0.9})
        write_parquet(votes, store.model_votes(member.slug, 0))
    vote_chunk(store, members, {m.slug: 0 for m in members}, 0)
    with FakeOpenAI(LABELS, WORDS) as fake:
        review_chunk(store, reviewer(fake, store.root, True), members, 0)
        assert len(fake.batches) == 1 and fake.direct_calls == 0
    hard = pd.read_parquet(store.hard_chunk(0)).set_index("id")
    texts = rows.set_index("id")["text"]
    assert len(hard) == len(samples)
    assert (hard["label"] == [WORDS[texts[i].split()[-1]] for i in hard.index]).all()
