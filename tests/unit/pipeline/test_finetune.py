import pandas as pd

from agent.domain import Source
from agent.pipeline.finetune import (
    agreed_audit_rows,
    improved,
    replay_sample,
    split_gate,
    training_weights,
)
from agent.pipeline.hardpool import gold_samples
from agent.store.runstore import RunStore, prepare_input, write_parquet
from agent.task import TaskSpec
from tests.fixtures.runs import make_store


def vote(store, chunk: int, uncertainty: list[float]) -> None:
    """A chunk's committee decisions as vote_chunk writes them (the columns replay reads)."""
    ids = pd.read_parquet(store.input_chunk(chunk))["id"]
    frame = pd.DataFrame(
        {"id": ids, "label": ["pos", "neg"] * (len(ids) // 2), "uncertainty": uncertainty}
    )
    write_parquet(frame, store.chunk_votes(chunk))


def test_replay_draws_only_unanimous_rows_of_the_chunks_seen(tmp_path):
    store = make_store(tmp_path, n=40, chunk_size=10, beta=5)
    store.cut_chunk(1, 10)
    vote(store, 0, [0.0] * 6 + [1 / 3] * 4)
    vote(store, 1, [0.0] * 2 + [1 / 3] * 8)
    picked = replay_sample(store, [0, 1], n=100, seed=1, exclude={"0"})
    # Unanimous rows: 0-5 and 10-11; row 0 is excluded (it is in the hard pool).
    assert sorted(picked["id"], key=int) == ["1", "2", "3", "4", "5", "10", "11"]
    texts = dict(zip(picked["id"], picked["text"], strict=True))
    assert texts["10"] == "t10"
    assert set(picked.columns) == {"id", "text", "label"}
    # Asking for fewer draws a seeded subset, the same one every time.
    few = replay_sample(store, [0, 1], n=3, seed=1, exclude=set())
    assert len(few) == 3 and few.equals(replay_sample(store, [0, 1], n=3, seed=1, exclude=set()))
    assert replay_sample(store, [0, 1], n=0, seed=1, exclude=set()).empty


def test_a_gate_without_gold_keeps_audited_rows_where_reviewer_and_committee_agree(tmp_path):
    store = make_store(tmp_path, n=20, chunk_size=10, beta=5)
    vote(store, 0, [0.0] * 8 + [1 / 3] * 2)  # labels pos, neg, pos, neg ...
    audit = pd.DataFrame(
        {
            "id": ["0", "1", "2", "3", "8"],
            "chunk": 0,
            # agrees; disagrees; agrees but is in the hard pool; capped; not unanimous
            "label": ["pos", "pos", "pos", None, "pos"],
            "source": [Source.LLM, Source.LLM, Source.LLM, Source.CAPPED, Source.LLM],
        }
    )
    write_parquet(audit, store.audit_chunk(0))
    rows = agreed_audit_rows(store, [0], exclude={"2"})
    assert rows.to_dict("records") == [{"id": "0", "text": "t0", "label": "pos"}]
    assert agreed_audit_rows(store, [1], exclude=set()).empty  # a chunk with no audit


def test_gate_holds_out_fifteen_percent_of_the_hard_samples():
    samples = pd.DataFrame({"id": [str(i) for i in range(40)], "label": "pos", "text": "x"})
    train, gate = split_gate(samples, seed=3)
    assert len(gate) == 6 and len(train) == 34
    assert set(train["id"]).isdisjoint(gate["id"])


def test_candidate_kept_only_when_it_beats_the_current_version_on_the_gate():
    def metrics(before, after, loss_before=1.0, loss_after=1.0, rows=10):
        return {
            "before": {"accuracy": before, "loss": loss_before, "rows": rows},
            "after": {"accuracy": after, "loss": loss_after, "rows": rows},
        }

    assert improved(metrics(0.5, 0.6))
    assert not improved(metrics(0.6, 0.5))
    assert improved(metrics(0.5, 0.5, loss_before=0.9, loss_after=0.8))
    assert not improved(metrics(0.5, 0.5))
    assert not improved(metrics(0.5, 0.9, rows=0))


def test_each_training_row_weighs_as_much_as_the_run_trusts_its_label(tmp_path):
    store = make_store(tmp_path, n=10, chunk_size=10, beta=5)
    posterior = pd.DataFrame(
        {
            "id": ["0", "1", "2", "3"],
            "label": ["pos", "neg", "pos", "neg"],
            "confidence": [0.9, 0.6, 0.8, 0.7],
            "p.neg": [0.1, 0.6, 0.25, 0.7],
            "p.pos": [0.9, 0.4, 0.75, 0.3],
        }
    )
    write_parquet(posterior, store.posterior_path)
    train = pd.DataFrame(
        {
            "id": ["0", "1", "2", "3", "9"],
            # Row 2 trains with the label the posterior chose; row 3 with the other one.
            "label": ["pos", "neg", "pos", "pos", "neg"],
            "text": "t",
        }
    )
    weight = training_weights(store, train, known={"1"})
    # 0 and 2: the calibrated confidence; 1: a person's label; 3: the posterior's probability
    # of the label it trains with; 9: never weighed (no posterior yet), counts fully.
    assert weight.tolist() == [0.9, 1.0, 0.8, 0.3, 1.0]


def test_gold_rows_the_committee_routed_train_as_expert_labels(tmp_path):
    gold = ["pos", "", "neg", "", "pos", "neg"]
    (tmp_path / "d.csv").write_text(
        "text,gold\n" + "\n".join(f"t{i},{g}" for i, g in enumerate(gold)) + "\n"
    )
    task = TaskSpec(
        description="sentiment",
        labels=["neg", "pos"],
        data_path=str(tmp_path / "d.csv"),
        gold_column="gold",
        gold_evidence=1.0,
        chunk_size=6,
    )
    store = RunStore.create(tmp_path / "run", task, prepare_input(task))
    routes = ["review", "review", "direct", "direct", "review", "review"]
    votes = pd.DataFrame({"id": [str(i) for i in range(6)], "route": routes})
    write_parquet(votes, store.chunk_votes(0))
    samples = gold_samples(store, [0])
    # Routed rows with a gold label: 0, 4 and 5 (1 is routed but has none; 2 was agreed on).
    assert samples["id"].tolist() == ["0", "4", "5"]
    assert samples["label"].tolist() == ["pos", "pos", "neg"]
    assert samples["text"].tolist() == ["t0", "t4", "t5"]
    assert set(samples["source"]) == {"gold"}
