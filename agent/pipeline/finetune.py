"""Continual fine-tuning (paper eq. 6-7) with a gate: a new version is kept only if it is better.

Trigger (eq. 4's β): after each chunk is reviewed, if the reviewed hard samples collected since
the last cycle (those with an expert label: llm, oracle or human; `nodes.after_review` counts
them) number at least β and input rows remain, annotation pauses and every SLM is fine-tuned.
A pool that reaches β on the last chunk trains nothing: no rows are left to label better.

Training set of cycle N: the pool's reviewed hard samples and the user's gold rows the
committee routed (`--gold-column`), minus a held-out gate (`GATE_SHARE` of them, or the gold
rows), plus a replay sample of confident committee labels (unanimous votes, U(x) = 0) from
every chunk labeled so far, `replay_ratio` replay rows per hard training row, so the SLM learns
the hard cases without forgetting what it already did well. The gate: the user's gold rows
when there are enough; else held-out hard samples plus the audited rows where the reviewer
gave the label the whole committee agreed on (never trained on), which catch forgetting.

Swap or roll back: vN (the candidate of cycle N) replaces the model in use only when its
accuracy on the gate beats the current version's (or ties with a lower loss); otherwise the
current version stays, and cycle.json and the candidate's gate.json record the rollback.
The gate is scored by the host (`score_gate`), never taken from the script's metrics.json: a
script that lies about its own accuracy must not get its model swapped in.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from agent.domain import CommitteeMember, Source
from agent.errors import Rejected, StepFailed
from agent.pipeline.annotate import Engine, LocalEngine, Step, scratch_dir
from agent.pipeline.hardpool import expert_samples, gold_samples
from agent.scripts.contract import MODEL_OUTPUT, finetune_args
from agent.scripts.verify import TEMPLATE_KINDS, check_finetune_metrics
from agent.store.runstore import RunStore, read_json, write_json, write_parquet
from sandbox.base import Limits, Sandbox

GATE_SHARE = 0.15
GATE_BATCH = 64
# A gate of known rows needs enough of them to tell versions apart, and no more than the
# host can score in seconds.
MIN_KNOWN_GATE, MAX_KNOWN_GATE = 30, 500


def split_gate(samples: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    shuffled = samples.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    n_gate = max(1, round(len(shuffled) * GATE_SHARE)) if len(shuffled) > 1 else 0
    return shuffled.iloc[n_gate:], shuffled.iloc[:n_gate]


def trusted_labels(store: RunStore, samples: pd.DataFrame) -> pd.DataFrame:
    """The pool with each reviewer-labeled row's label replaced by the trust stage's
    best-supported one (a person's or an oracle's answer stays as given)."""
    if not store.posterior_path.is_file() or samples.empty:
        return samples
    best = pd.read_parquet(store.posterior_path, columns=["id", "label"]).set_index("id")["label"]
    by_reviewer = samples["source"] == Source.LLM
    trusted = samples["id"].map(best)
    samples = samples.copy()
    samples.loc[by_reviewer & trusted.notna(), "label"] = trusted[by_reviewer & trusted.notna()]
    return samples


def training_weights(store: RunStore, train: pd.DataFrame, known: set[str]) -> pd.Series:
    """Each training row's share in the loss: 1 for a label a person, an oracle or the user's
    gold gave; else the trust stage's calibrated confidence in the label it trains with (a
    reviewer's answer it doubts, a replayed committee label), so an unsure label teaches less."""
    weight = pd.Series(1.0, index=train.index)
    if not store.posterior_path.is_file():
        return weight
    posterior = pd.read_parquet(store.posterior_path).set_index("id")
    doubted = ~train["id"].isin(known) & train["id"].isin(posterior.index)
    rows = posterior.loc[train.loc[doubted, "id"]]
    chosen = rows["label"].to_numpy() == train.loc[doubted, "label"].to_numpy()
    # The calibrated confidence where the row trains with the label the posterior chose; the
    # posterior's own probability of the label otherwise (a replayed row it later doubted).
    trained = rows.columns.get_indexer("p." + train.loc[doubted, "label"].astype(str))
    own = rows.to_numpy()[np.arange(len(rows)), trained]
    weight[doubted] = np.where(chosen, rows["confidence"].to_numpy(), own).astype(float)
    return weight.clip(0.0, 1.0)


def reviewer_stand_down(store: RunStore, samples: pd.DataFrame) -> str | None:
    """Why this cycle must not run, or None: its training labels come only from a reviewer the
    trust stage measured worse than the committee on the rows it was asked about."""
    if samples.empty or not (samples["source"] == Source.LLM).all():
        return None
    if not store.reliability_path.is_file():
        return None
    versus = read_json(store.reliability_path).get("reviewer_vs_committee") or {}
    if not versus.get("worse"):
        return None
    return (
        f"the reviewer measured worse than the committee where it was asked "
        f"({versus['reviewer']['accuracy']:.1%} against {versus['plurality']['accuracy']:.1%}, "
        f"{versus['basis']}): no SLM learns from its labels"
    )


def agreed_audit_rows(store: RunStore, chunks: list[int], exclude: set[str]) -> pd.DataFrame:
    """Audited rows of `chunks` (id, text, label) where the reviewer gave the label the whole
    committee agreed on: no gold, yet two sources that fail differently say the same, so the
    truth is likely. A gate without gold keeps them so a version that forgets the easy rows
    while it learns the hard ones is caught."""
    frames = []
    for chunk in chunks:
        path = store.audit_chunk(chunk)
        if not path.is_file():
            continue
        audit = pd.read_parquet(path).set_index("id")
        votes = pd.read_parquet(store.chunk_votes(chunk), columns=["id", "label", "uncertainty"])
        votes = votes[(votes["uncertainty"] == 0) & votes["id"].isin(audit.index)]
        audit = audit.loc[votes["id"]]
        agreed = votes[
            (audit["source"].to_numpy() == Source.LLM)
            & (audit["label"].to_numpy() == votes["label"].to_numpy())
            & ~votes["id"].isin(exclude)
        ]
        texts = pd.read_parquet(store.input_chunk(chunk)).set_index("id")["text"]
        frames.append(agreed.assign(text=texts.loc[agreed["id"]].to_numpy()))
    if not frames:
        return pd.DataFrame(columns=["id", "text", "label"])
    return pd.concat(frames, ignore_index=True)[["id", "text", "label"]]


def known_gate(store: RunStore, seed: int) -> tuple[pd.DataFrame, str]:
    """The gate: rows whose label is known (the user's gold, a person's answers) when there are
    MIN_KNOWN_GATE of them, so a version is kept for being right, not for agreeing with the
    reviewer; else empty, and the cycle holds out reviewed hard samples as before."""
    known = store.gold_evidence()
    if len(known) < MIN_KNOWN_GATE:
        return pd.DataFrame(columns=["id", "text", "label"]), "held-out reviewed hard samples"
    texts = store.rows().set_index("id")["text"]
    gate = pd.DataFrame({"id": known.index, "text": texts.loc[known.index].to_numpy()})
    gate["label"] = known.to_numpy()
    gate = gate[gate["text"].notna()]
    return gate.sample(n=min(len(gate), MAX_KNOWN_GATE), random_state=seed), "gold rows"


def replay_sample(
    store: RunStore, chunks: list[int], n: int, seed: int, exclude: set[str]
) -> pd.DataFrame:
    """Up to n rows the whole committee agreed on (U = 0) in `chunks`, as id, text, label."""
    if n <= 0 or not chunks:
        return pd.DataFrame(columns=["id", "text", "label"])
    frames = []
    for chunk in chunks:
        votes = pd.read_parquet(store.chunk_votes(chunk), columns=["id", "label", "uncertainty"])
        sure = votes[(votes["uncertainty"] == 0) & ~votes["id"].isin(exclude)]
        texts = pd.read_parquet(store.input_chunk(chunk)).set_index("id")["text"]
        frames.append(sure.assign(text=texts.loc[sure["id"]].to_numpy()))
    confident = pd.concat(frames, ignore_index=True)
    picked = confident.sample(n=min(n, len(confident)), random_state=seed)
    return picked[["id", "text", "label"]].reset_index(drop=True)


def score_gate(model_dir: Path, gate: pd.DataFrame, max_length: int) -> dict:
    """Accuracy and mean cross-entropy of `model_dir` on the gate rows (labels in the model's
    own label space), computed in this process, on the CPU, as the finetune template does."""
    import torch  # noqa: PLC0415 - torch: seconds to import, only here
    from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: PLC0415 - torch: seconds to import, only here

    if gate.empty:
        return {"accuracy": 0.0, "loss": 0.0, "rows": 0}
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        # A script wrote these weights: safetensors only, never a pickle.
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True)
    except Exception as err:  # transformers raises many kinds; every one means "not loadable"
        raise StepFailed(f"{model_dir} does not load: {type(err).__name__}") from None
    label2id = {label: i for i, label in model.config.id2label.items()}
    unknown = sorted(set(gate["label"]) - set(label2id))
    if unknown:
        raise StepFailed(f"{model_dir}: gate labels outside the model's label space: {unknown}")
    targets = torch.tensor([label2id[x] for x in gate["label"]])
    texts = gate["text"].astype(str).tolist()
    logits = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(texts), GATE_BATCH):
            batch = tokenizer(
                texts[start : start + GATE_BATCH],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            logits.append(model(**batch).logits.float())
    scores = torch.cat(logits)
    return {
        "accuracy": (scores.argmax(-1) == targets).float().mean().item(),
        "loss": torch.nn.functional.cross_entropy(scores, targets).item(),
        "rows": len(texts),
    }


def _reported(step: str, directory: Path, gate_rows: int) -> dict:
    try:
        return check_finetune_metrics(directory / "metrics.json", gate_rows)
    except Rejected as err:
        raise StepFailed(f"step {step}: {err.reason}") from None


def improved(metrics: dict) -> bool:
    before, after = metrics["before"], metrics["after"]
    if after["rows"] == 0:
        return False
    if after["accuracy"] != before["accuracy"]:
        return after["accuracy"] > before["accuracy"]
    return after["loss"] < before["loss"]


def _peak_memory_mb(store: RunStore, step: str, metrics: dict) -> float | None:
    """The sandbox's measurement (Docker's cgroup) when it has one, else the script's own RSS."""
    log = store.steps_dir / f"{step}.json"
    measured = read_json(log).get("peak_memory_mb") if log.is_file() else None
    peak = measured if measured is not None else metrics.get("peak_rss_mb")
    return round(peak, 1) if peak is not None else None


def finetune_cycle(
    store: RunStore,
    sandbox: Sandbox,
    committee: Sequence[CommitteeMember],
    versions: dict[str, int],
    pool_chunks: list[int],
    seen_chunks: list[int],
    cycle: int,
    device: str,
    limits: Limits,
    engine: Engine | None = None,
) -> tuple[dict[str, int], dict]:
    """Fine-tune every SLM on the pool plus replay; returns the versions to use next and the
    cycle record (also saved as finetune/cycle-NNN/cycle.json).

    `engine` runs the SLMs' fine-tune steps (default LocalEngine: side by side, each with its
    share of the threads; RayEngine: each its own Ray task with its CPU or GPU share)."""
    engine = engine or LocalEngine()
    task = store.task()
    cycle_dir = store.finetune_dir(cycle)
    record_path = cycle_dir / "cycle.json"
    if record_path.is_file():
        record = read_json(record_path)
        return record["versions_after"], record
    started = time.perf_counter()
    samples = trusted_labels(store, expert_samples(store, pool_chunks))
    stand_down = reviewer_stand_down(store, samples)
    if stand_down:
        record = {
            "cycle": cycle,
            "chunks": pool_chunks,
            "pool_rows": len(samples),
            "skipped": stand_down,
            "models": {},
            "versions_after": dict(versions),
            "seconds": round(time.perf_counter() - started, 2),
        }
        write_json(record, record_path)
        return dict(versions), record
    # The user's gold rows the committee found hard train like any expert label; those the
    # gate holds (when gold is the gate) are left out of training below.
    samples = pd.concat([samples, gold_samples(store, pool_chunks)], ignore_index=True)
    gate, gate_source = known_gate(store, task.seed + cycle)
    if gate.empty:
        hard_train, gate = split_gate(samples[["id", "text", "label"]], task.seed + cycle)
        agreed = agreed_audit_rows(store, seen_chunks, exclude=set(samples["id"]))
        if len(agreed):
            gate = pd.concat([gate, agreed], ignore_index=True)
            gate_source += f" + {len(agreed)} audited rows the reviewer and committee agreed on"
    else:
        hard_train = samples[~samples["id"].isin(gate["id"])][["id", "text", "label"]]
    replay = replay_sample(
        store,
        seen_chunks,
        round(task.replay_ratio * len(hard_train)),
        task.seed + cycle,
        exclude=set(samples["id"]) | set(gate["id"]),
    )
    train = pd.concat([hard_train, replay], ignore_index=True)
    known = set(samples.loc[samples["source"] != Source.LLM, "id"])
    known |= set(store.gold_evidence().index)
    train["weight"] = training_weights(store, train, known)
    new_versions = dict(versions)
    per_model = {}
    # The gate is scored here as a transformers classifier; other kinds stay at their version.
    not_finetuned = {
        m.slug: f"a model of kind {m.kind}: the host cannot score its gate"
        for m in committee
        if m.kind not in TEMPLATE_KINDS
    }
    tuned = [m for m in committee if m.slug not in not_finetuned]
    # Cycle N's candidate is always vN, kept or not: a resumed cycle finds its own output.
    pending = sum(not store.model_dir(m.slug, cycle).is_dir() for m in tuned)
    threads = engine.step_threads(limits, pending)
    steps, outputs = [], {}
    for model in tuned:
        slug = model.slug
        to_model = model.inverse_label_map
        if to_model is None:
            raise RuntimeError(f"{slug} has no inverse label map; align_labels never ran")
        train_path = cycle_dir / f"{slug}.train.parquet"
        gate_path = cycle_dir / f"{slug}.gate.parquet"
        write_parquet(train.assign(label=train["label"].map(to_model)), train_path)
        write_parquet(gate.assign(label=gate["label"].map(to_model)), gate_path)
        current = store.model_dir(slug, versions[slug])
        out = store.model_dir(slug, cycle)
        step = f"finetune-{slug}-{cycle:03d}"
        outputs[step] = out
        if not out.is_dir():
            scratch = scratch_dir(store, step)
            steps.append(
                Step(
                    run_dir=store.root,
                    name=step,
                    script=store.script_path("finetune", slug),
                    args=tuple(
                        finetune_args(current, train_path, gate_path, scratch, device, threads)
                    ),
                    inputs=(current, train_path, gate_path),
                    output_dir=scratch,
                    limits=replace(limits, threads=threads),
                    output=MODEL_OUTPUT,
                    device=device,
                )
            )

    def keep(done: Step) -> None:
        _reported(done.name, done.output_dir, len(gate))
        # Inspected, so from here on the host's: vN appears only whole and checked.
        os.replace(done.output_dir, outputs[done.name])

    engine.run_steps(sandbox, steps, keep)
    for model in tuned:
        slug = model.slug
        current = store.model_dir(slug, versions[slug])
        candidate_version = cycle
        out = store.model_dir(slug, candidate_version)
        step = f"finetune-{slug}-{cycle:03d}"
        gate_rows = gate.assign(label=gate["label"].map(model.inverse_label_map))
        # The script's metrics.json is its own account; only the train time is taken from it.
        reported = _reported(step, out, len(gate))
        metrics = {
            "before": score_gate(current, gate_rows, task.max_length),
            "after": score_gate(out, gate_rows, task.max_length),
            "train_seconds": reported["train_seconds"],
            "gate_scored_by": "host",
        }
        kept = improved(metrics)
        if kept:
            new_versions[slug] = candidate_version
        gate_record = {**metrics, "script_reported": reported}
        write_json({**gate_record, "kept": kept, "from_version": versions[slug]}, out / "gate.json")
        per_model[slug] = {
            "gate_before": metrics["before"]["accuracy"],
            "gate_after": metrics["after"]["accuracy"],
            "loss_before": metrics["before"]["loss"],
            "loss_after": metrics["after"]["loss"],
            "kept": kept,
            "from_version": versions[slug],
            "version": new_versions[slug],
            "train_seconds": round(metrics["train_seconds"], 2),
            "peak_memory_mb": _peak_memory_mb(store, step, reported),
        }
    record = {
        "cycle": cycle,
        "chunks": pool_chunks,
        "pool_rows": len(samples),
        "train_rows": len(train),
        "hard_train_rows": len(hard_train),
        "replay_rows": len(replay),
        "mean_weight": round(float(train["weight"].mean()), 4) if len(train) else None,
        "gate_rows": len(gate),
        "gate_source": gate_source,
        "models": per_model,
        # Gate accuracy and loss come from score_gate on the host, not the scripts' metrics.json.
        "gate_scored_by": "host",
        "rolled_back": sorted(s for s, m in per_model.items() if not m["kept"]),
        "not_finetuned": not_finetuned,
        "versions_after": new_versions,
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json(record, record_path)
    store.log_timing("finetune", record["seconds"], cycle=cycle)
    return new_versions, record
