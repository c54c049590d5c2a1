"""The run's outputs: labels.parquet/csv (every input row exactly once), metrics.json, report.md."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd

from agent.committee.labels import USER
from agent.domain import CommitteeMember, Route, Source
from agent.pipeline.plots import escalation_plot, gate_plot
from agent.store.ledger import ledger_totals
from agent.store.runstore import RunStore, atomic_path, read_json, write_json, write_parquet

LABEL_COLUMNS = [
    "id",
    "text",
    "truncated",
    "label",
    "source",
    "confidence",
    "uncertainty",
    "votes",
    "chunk",
]


def assemble_labels(store: RunStore, members: Sequence[CommitteeMember]) -> pd.DataFrame:
    rows = store.rows()
    if "truncated" not in rows:  # a run prepared before texts were cut
        rows["truncated"] = False
    slugs = [m.slug for m in members]
    committee = (
        pd.concat(
            [pd.read_parquet(store.chunk_votes(c)) for c in range(store.n_chunks())],
            ignore_index=True,
        )
        if store.n_chunks()
        else pd.DataFrame(columns=["id", "label", "confidence", "uncertainty"])
    )
    committee["votes"] = [
        json.dumps({s: r[f"{s}.label"] for s in slugs}, ensure_ascii=False)
        for r in committee.to_dict("records")
    ]
    committee["source"] = Source.COMMITTEE
    hard_paths = store.hard_chunks()
    if hard_paths:
        hard = pd.concat([pd.read_parquet(p) for p in hard_paths]).set_index("id")
        reviewed = committee["id"].isin(hard.index)
        ids = committee.loc[reviewed, "id"]
        committee.loc[reviewed, "label"] = hard.loc[ids, "label"].to_numpy()
        committee.loc[reviewed, "source"] = hard.loc[ids, "source"].to_numpy()
        expert = committee["source"].isin((Source.ORACLE, Source.HUMAN))
        committee.loc[expert, "confidence"] = 1.0
        committee.loc[committee["source"] == Source.LLM, "confidence"] = None
    labels = rows[["row", "id", "text", "truncated"]].merge(
        committee[["id", "label", "source", "confidence", "uncertainty", "votes", "chunk"]],
        on="id",
        how="left",
    )
    skipped = labels["text"].isna()
    labels.loc[skipped, "source"] = Source.SKIPPED
    missing = labels["source"].isna()
    if missing.any():
        raise RuntimeError(f"{int(missing.sum())} rows have no label yet; the run is incomplete")
    if len(labels) != len(rows) or labels["id"].duplicated().any():
        raise RuntimeError("labels do not match the input one-to-one")
    labels = labels.sort_values("row")[LABEL_COLUMNS]
    labels["chunk"] = labels["chunk"].astype("Int64")
    return labels


def write_labels(store: RunStore, labels: pd.DataFrame) -> None:
    write_parquet(labels, store.labels_path)
    with atomic_path(store.labels_csv_path) as tmp:
        labels.to_csv(tmp, index=False)


def write_capped(store: RunStore, labels: pd.DataFrame) -> dict:
    """The ids of hard samples the LLM budget left with the committee's label, in a file."""
    capped = labels[labels["source"] == Source.CAPPED]
    path = store.capped_path
    if capped.empty:
        path.unlink(missing_ok=True)
        return {"count": 0, "file": None}
    with atomic_path(path) as tmp:
        capped[["id", "chunk", "label"]].to_csv(tmp, index=False)
    return {"count": len(capped), "file": path.name}


def cycles(store: RunStore) -> list[dict]:
    return [read_json(p) for p in store.finetune_records()]


def compute_metrics(
    store: RunStore, labels: pd.DataFrame, committee: Sequence[CommitteeMember]
) -> dict:
    task = store.task()
    labelable = labels[labels["source"] != Source.SKIPPED]
    per_chunk, chunk_rows = [], []
    for chunk in range(store.n_chunks()):
        votes = pd.read_parquet(store.chunk_votes(chunk), columns=["route"])
        per_chunk.append(round(float((votes["route"] == Route.REVIEW).mean()), 4))
        chunk_rows.append(len(votes))
    escalated = int((labelable["source"] != Source.COMMITTEE).sum())
    metrics = {
        "task": task.description,
        "labels": task.labels,
        "k": task.k,
        "epsilon": task.routing_threshold,
        "beta": task.beta,
        "rows": len(labels),
        "labeled": int(labels["label"].notna().sum()),
        "by_source": labels["source"].value_counts().to_dict(),
        "by_label": labels["label"].value_counts().to_dict(),
        "escalated": escalated,
        "escalation_rate": round(escalated / max(len(labelable), 1), 4),
        "escalation_per_chunk": per_chunk,
        "chunk_rows": chunk_rows,
        "llm": ledger_totals(store.ledger_path),
        "seconds_by_stage": {k: round(v, 2) for k, v in store.timings().items()},
        "finetune_cycles": cycles(store),
        "models": [
            {
                "id": m.id,
                "slug": m.slug,
                "label_map": m.label_map,
                "label_evidence": m.label_evidence,
            }
            for m in committee
        ],
    }
    rows = store.rows()
    if "gold" in rows:
        gold = rows.set_index("id")["gold"]
        scored = labelable[labelable["id"].map(gold).notna()]
        metrics["accuracy_vs_gold"] = round(
            float((scored["label"] == scored["id"].map(gold)).mean()), 4
        )
    return metrics


def render_report(metrics: dict) -> str:
    llm = metrics["llm"]
    lines = [
        f"# AutoAnnotator report: {metrics['task']}",
        "",
        f"- rows: {metrics['rows']}, labeled: {metrics['labeled']}",
        f"- labels: {', '.join(metrics['labels'])}; k = {metrics['k']}, "
        f"ε = {metrics['epsilon']:.3f}, β = {metrics['beta']}",
        f"- escalated to review: {metrics['escalated']} ({metrics['escalation_rate']:.1%})",
        f"- LLM calls: {llm['calls']} (+{llm['cache_hits']} answered from cache), tokens "
        f"{llm['tokens_in']} in / {llm['tokens_out']} out, cost ${llm['cost_usd']:.4f}",
    ]
    if "accuracy_vs_gold" in metrics:
        lines.append(f"- accuracy against the gold column: {metrics['accuracy_vs_gold']:.2%}")
    lines += ["", "## Labels by source", "", "| source | rows |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in metrics["by_source"].items()]
    capped = metrics["committee_capped"]
    if capped["count"]:
        lines += [
            "",
            "## Over the LLM budget",
            "",
            f"{capped['count']} hard samples came after --max-llm-calls / --max-cost was spent: "
            "they keep the committee's plurality label (source `committee-capped`) and train no "
            f"SLM. Their ids: `{capped['file']}`.",
        ]
    lines += ["", "## Labels", "", "| label | rows |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in metrics["by_label"].items()]
    lines += ["", "## Committee", "", "| model | label map |", "|---|---|"]
    for m in metrics["models"]:
        evidence = m.get("label_evidence") or {}
        mapping = ", ".join(
            f"{a} → {b}" + (" (user)" if str(evidence.get(a, "")).startswith(USER) else "")
            for a, b in m["label_map"].items()
        )
        lines.append(f"| {m['id']} | {mapping} |")
    if any(
        str(e).startswith(USER)
        for m in metrics["models"]
        for e in (m.get("label_evidence") or {}).values()
    ):
        lines += ["", "(user): from your --label-map, over the automatic mapping."]
    lines += ["", "## Escalation per chunk", ""]
    if metrics.get("plots", {}).get("escalation"):
        lines += [f"![escalation per chunk]({metrics['plots']['escalation']})", ""]
    lines += ["| chunk | rows | routed to review |", "|---|---|---|"]
    lines += [
        f"| {i} | {n} | {r:.1%} |"
        for i, (n, r) in enumerate(
            zip(metrics["chunk_rows"], metrics["escalation_per_chunk"], strict=True)
        )
    ]
    lines += ["", "## Fine-tuning cycles", ""]
    if not metrics["finetune_cycles"]:
        lines.append("None: the reviewed hard pool never reached β while rows were left.")
    else:
        lines += _cycle_lines(metrics)
    lines += ["", "## Time by stage", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in metrics["seconds_by_stage"].items()]
    return "\n".join(lines) + "\n"


def _cycle_lines(metrics: dict) -> list[str]:
    lines = [
        f"Trigger: {metrics['beta']} reviewed hard samples since the last cycle, checked after "
        "each chunk. Training: the pool's hard samples less the gate, plus replayed unanimous "
        "committee labels. Gate: held-out hard samples; the candidate is kept only if it beats "
        "the version in use there, else rolled back.",
        "",
    ]
    if metrics.get("plots", {}).get("gate"):
        lines += [f"![gate accuracy per cycle]({metrics['plots']['gate']})", ""]
    lines += [
        "| cycle | chunks | hard train | replay | gate | model | gate before | gate after "
        "| verdict | train s | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cycle in metrics["finetune_cycles"]:
        chunks = f"{min(cycle['chunks'])}-{max(cycle['chunks'])}"
        for slug, m in cycle["models"].items():
            verdict = f"kept v{m['version']}" if m["kept"] else f"rolled back to v{m['version']}"
            lines.append(
                f"| {cycle['cycle']} | {chunks} | {cycle.get('hard_train_rows', '-')} | "
                f"{cycle.get('replay_rows', '-')} | {cycle['gate_rows']} | {slug} | "
                f"{m['gate_before']:.3f} | {m['gate_after']:.3f} | {verdict} | "
                f"{m['train_seconds']} | {m.get('peak_memory_mb') or '-'} |"
            )
    lines += ["", "| cycle | seconds |", "|---|---|"]
    lines += [f"| {c['cycle']} | {c['seconds']} |" for c in metrics["finetune_cycles"]]
    return lines


def write_plots(store: RunStore, metrics: dict) -> dict[str, str]:
    """PNG figures under plots/, as paths relative to the report."""
    plots = {}
    if metrics["escalation_per_chunk"]:
        path = escalation_plot(
            metrics["escalation_per_chunk"],
            metrics["finetune_cycles"],
            store.plots_dir / "escalation.png",
        )
        plots["escalation"] = store.relative(path)
    if metrics["finetune_cycles"]:
        path = gate_plot(metrics["finetune_cycles"], store.plots_dir / "gate.png")
        plots["gate"] = store.relative(path)
    return plots


def write_outputs(store: RunStore, committee: Sequence[CommitteeMember]) -> dict:
    labels = assemble_labels(store, committee)
    write_labels(store, labels)
    metrics = compute_metrics(store, labels, committee)
    metrics["committee_capped"] = write_capped(store, labels)
    metrics["plots"] = write_plots(store, metrics)
    write_json(metrics, store.metrics_path)
    with atomic_path(store.report_path) as tmp:
        tmp.write_text(render_report(metrics), encoding="utf-8")
    return metrics


def refresh_outputs(store: RunStore) -> None:
    """Re-export labels, metrics and report of a finished run so they carry the human answers."""
    write_outputs(store, store.committee())
