"""`eval`: a labeled file run as if unlabeled, scored like the paper's tables 3 and 4."""

from __future__ import annotations

import resource
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import pandas as pd

from agent.committee.scores import classification_scores, scores_markdown
from agent.pipeline.report import read_labels
from agent.pipeline.review import ReviewItem
from agent.pipeline.runner import RunOptions, create_run, open_reviewer, preflight, run_graph
from agent.store.runstore import RunStore, read_json, write_json
from agent.task import TaskSpec

COLUMNS = ["method", "accuracy", "macro_f1", "llm_calls", "escalated", "seconds", "peak_mb"]


def peak_memory_mb() -> float:
    """Peak RSS of this process and of the largest sandboxed script (Linux reports KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)


def _row(method, predicted, gold, labels, **extra) -> dict:
    """One table row; `scores` (per-class precision/recall/F1, confusion matrix) goes to
    eval.json and eval.md, not to the printed table."""
    scores = classification_scores(predicted, gold, labels)
    return {
        "method": method,
        "accuracy": f"{scores.get('accuracy', float('nan')):.2%}",
        "macro_f1": f"{scores.get('macro_f1', float('nan')):.3f}",
        "scores": scores,
        "llm_calls": extra.get("llm_calls", 0),
        "escalated": extra.get("escalated", "-"),
        "seconds": extra.get("seconds", "-"),
        "peak_mb": extra.get("peak_mb", "-"),
    }


def scoring_gold(store: RunStore) -> pd.Series:
    """id -> gold label of the rows a score counts: not those the run was given as evidence."""
    gold = store.rows().set_index("id")["gold"]
    return gold.drop(store.gold_evidence().index)


def committee_rows(store: RunStore, task: TaskSpec) -> list[dict]:
    """Each single SLM and the committee alone, scored on the votes the run recorded."""
    committee = store.committee()
    votes = pd.concat(
        [pd.read_parquet(store.chunk_votes(c)) for c in range(store.n_chunks())],
        ignore_index=True,
    )
    gold_by_id = scoring_gold(store)
    votes = votes[votes["id"].map(gold_by_id).notna()]
    gold = votes["id"].map(gold_by_id).tolist()
    seconds = round(store.timings().get("annotate", 0.0), 1)
    rows = [
        _row(
            f"SLM only: {m.id}",
            votes[f"{m.slug}.label"].tolist(),
            gold,
            task.labels,
            seconds=seconds,
        )
        for m in committee
    ]
    rows.append(
        _row(
            "SLM committee (majority vote)",
            votes["label"].tolist(),
            gold,
            task.labels,
            seconds=seconds,
        )
    )
    return rows


def autoannotator_row(store: RunStore, task: TaskSpec, name: str, seconds: float) -> dict:
    labels = read_labels(store)
    gold_by_id = scoring_gold(store)
    scored = labels[labels["id"].map(gold_by_id).notna() & (labels["source"] != "skipped")]
    metrics = read_json(store.metrics_path)
    return _row(
        f"AutoAnnotator + {name}",
        scored["label"].tolist(),
        scored["id"].map(gold_by_id).tolist(),
        task.labels,
        llm_calls=metrics["llm"]["calls"] + metrics["llm"]["cache_hits"],
        escalated=f"{metrics['escalation_rate']:.1%}",
        seconds=round(seconds, 1),
        peak_mb=peak_memory_mb(),
    )


def llm_alone_row(store: RunStore, task: TaskSpec, options: RunOptions, sample: int) -> dict:
    """The LLM labeling a random sample by itself (the paper's LLM-only rows)."""
    rows = store.rows()
    rows = rows[
        rows["text"].notna() & rows["gold"].notna() & ~rows["id"].isin(store.gold_evidence().index)
    ]
    picked = rows.sample(n=min(sample, len(rows)), random_state=task.seed)
    started = time.perf_counter()
    with ExitStack() as stack:
        reviewer = open_reviewer(task, store, options, stack)
        verdicts = reviewer.review(
            [ReviewItem(id=r["id"], text=r["text"], votes={}) for r in picked.to_dict("records")]
        )
        # Batched review makes fewer calls than samples; answers from the cache were calls once.
        calls = reviewer.client.usage.calls + reviewer.client.usage.cache_hits
    projected = round(calls * len(rows) / max(len(picked), 1))
    return _row(
        f"LLM only (sample of {len(picked)})",
        [v.label for v in verdicts],
        picked["gold"].tolist(),
        task.labels,
        llm_calls=f"{calls} (all {len(rows)} rows: ~{projected})",
        seconds=round(time.perf_counter() - started, 1),
    )


def _reviewer(base: TaskSpec, name: str) -> str:
    return f"oracle:{base.gold_column}" if name == "oracle" else "llm"


def _run(task: TaskSpec, run_dir: Path, options: RunOptions) -> tuple[RunStore, float]:
    """Run (or finish) one evaluation run; returns its store and the seconds this call took."""
    store = create_run(task, run_dir) if not run_dir.exists() else RunStore(run_dir)
    started = time.perf_counter()
    run_graph(store, options, resume=True)
    return store, time.perf_counter() - started


def evaluate(
    base: TaskSpec, root: Path, options: RunOptions, reviewers: list[str], llm_sample: int
) -> dict:
    root = Path(root)
    if "llm" in reviewers:
        preflight(base.model_copy(update={"reviewer": "llm"}), options)
    options = replace(options, vote_cache=root / "vote-cache")
    table_rows: list[dict] = []
    for name in reviewers:
        task = base.model_copy(update={"reviewer": _reviewer(base, name)})
        store, seconds = _run(task, root / name, options)
        if not table_rows:
            table_rows += committee_rows(store, task)
        table_rows.append(
            autoannotator_row(store, task, "human (oracle)" if name == "oracle" else "LLM", seconds)
        )
        if name == "llm" and llm_sample > 0:
            table_rows.insert(len(table_rows) - 1, llm_alone_row(store, task, options, llm_sample))
    path = root / "eval.json"
    write_json({"columns": COLUMNS, "rows": table_rows}, path)
    (root / "eval.md").write_text(_markdown(table_rows), encoding="utf-8")
    return {"columns": COLUMNS, "rows": table_rows, "path": str(path)}


def _markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    for row in rows:
        lines += ["", f"### {row['method']}", "", *scores_markdown(row["scores"])]
    return "\n".join(lines) + "\n"


ABLATION_COLUMNS = [
    "reviewer",
    "k",
    "beta",
    "accuracy",
    "macro_f1",
    "escalated",
    "llm_calls",
    "cycles",
    "models_swapped",
    "annotate_runs",
    "seconds",
]


def _ablation_row(store: RunStore, name: str, k: int, beta: int, seconds: float) -> dict:
    task = store.task()
    labels = read_labels(store)
    gold_by_id = scoring_gold(store)
    scored = labels[labels["id"].map(gold_by_id).notna() & (labels["source"] != "skipped")]
    predicted, gold = scored["label"].tolist(), scored["id"].map(gold_by_id).tolist()
    scores = classification_scores(predicted, gold, task.labels)
    metrics = read_json(store.metrics_path)
    cycles = metrics["finetune_cycles"]
    return {
        "reviewer": name,
        "k": k,
        "beta": beta,
        "accuracy": scores.get("accuracy", float("nan")),
        "macro_f1": scores.get("macro_f1", float("nan")),
        "escalated": metrics["escalation_rate"],
        "llm_calls": metrics["llm"]["calls"],
        "cycles": len(cycles),
        "models_swapped": sum(m["kept"] for c in cycles for m in c["models"].values()),
        # Fewer than chunks * k when v0 votes came from another cell of the grid.
        "annotate_runs": len(list(store.steps_dir.glob("annotate-*.json"))),
        "seconds": round(seconds, 1),
    }


def ablation(
    base: TaskSpec,
    root: Path,
    options: RunOptions,
    reviewers: list[str],
    ks: list[int],
    betas: list[int],
) -> dict:
    """The paper's tables 5-6 as one grid: every (k, β) with every reviewer, one run each.

    Runs share a vote cache, so a model's v0 votes on a row are computed once for the grid;
    each cell's run lives in `<root>/k<k>-beta<β>/<reviewer>` and resumes if interrupted.
    """
    root = Path(root)
    if "llm" in reviewers:
        preflight(base.model_copy(update={"reviewer": "llm"}), options)
    options = replace(options, vote_cache=root / "vote-cache")
    rows = []
    for k in ks:
        for beta in betas:
            for name in reviewers:
                task = base.model_copy(
                    update={"k": k, "beta": beta, "reviewer": _reviewer(base, name)}
                )
                store, seconds = _run(task, root / f"k{k}-beta{beta}" / name, options)
                rows.append(_ablation_row(store, name, k, beta, seconds))
    table = pd.DataFrame(rows, columns=ABLATION_COLUMNS)
    csv_path, md_path = root / "ablation.csv", root / "ablation.md"
    table.to_csv(csv_path, index=False)
    md_path.write_text(_ablation_markdown(table, ks, betas), encoding="utf-8")
    return {"columns": ABLATION_COLUMNS, "rows": rows, "path": str(md_path), "csv": str(csv_path)}


def _ablation_markdown(table: pd.DataFrame, ks: list[int], betas: list[int]) -> str:
    """One accuracy grid per reviewer (k down, β across, like tables 5-6), then every number."""
    names = {"oracle": "AutoAnnotator + human (oracle)", "llm": "AutoAnnotator + LLM"}
    lines = []
    for name, group in table.groupby("reviewer", sort=False):
        cell = {(r["k"], r["beta"]): r["accuracy"] for r in group.to_dict("records")}
        lines += [f"### {names[name]}: accuracy by k and β", ""]
        lines += ["| k \\ β | " + " | ".join(str(b) for b in betas) + " |"]
        lines += ["|---|" + "---|" * len(betas)]
        lines += [f"| {k} | " + " | ".join(f"{cell[k, b]:.2%}" for b in betas) + " |" for k in ks]
        lines.append("")
    lines += ["### All runs", ""]
    lines += ["| " + " | ".join(ABLATION_COLUMNS) + " |", "|" + "---|" * len(ABLATION_COLUMNS)]
    lines += [
        "| " + " | ".join(str(r[c]) for c in ABLATION_COLUMNS) + " |"
        for r in table.to_dict("records")
    ]
    return "\n".join(lines) + "\n"
