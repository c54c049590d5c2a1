"""The run's outputs: labels.parquet/csv (every input row exactly once), metrics.json, report.md.

labels.* hold the user's columns exactly as given, then the run's (agent.domain.OUTPUT_COLUMNS),
each named with the `aa_` prefix; `read_labels` gives the run's back under their own names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd

from agent.committee.labels import USER
from agent.committee.scores import classification_scores, scores_markdown
from agent.domain import (
    EXPERT_SOURCES,
    OUTPUT_COLUMNS,
    OUTPUT_PREFIX,
    CommitteeMember,
    Route,
    Source,
    output_name,
)
from agent.pipeline import trust
from agent.pipeline.plots import escalation_plot, gate_plot, reliability_plot
from agent.store.ledger import ledger_totals
from agent.store.runstore import RunStore, atomic_path, read_json, write_json, write_parquet

LABEL_COLUMNS = [
    "id",
    "text",
    "truncated",
    "label",
    "source",
    "confidence",
    "reviewer_label",
    "uncertainty",
    "votes",
    "chunk",
]


def assemble_labels(
    store: RunStore, members: Sequence[CommitteeMember], *, partial: bool = False
) -> pd.DataFrame:
    """Every input row once with its label and where it came from. `partial`: a run still going
    (paused for a person, stopped) gives the rows labeled so far instead of failing."""
    rows = store.rows()
    if "truncated" not in rows:  # a run prepared before texts were cut
        rows["truncated"] = False
    slugs = [m.slug for m in members]
    voted = store.voted_chunks()
    committee = (
        pd.concat([pd.read_parquet(path) for path in voted], ignore_index=True)
        if voted
        else pd.DataFrame(columns=["id", "label", "confidence", "uncertainty"])
    )
    committee["votes"] = [
        json.dumps({s: r[f"{s}.label"] for s in slugs}, ensure_ascii=False)
        for r in committee.to_dict("records")
    ]
    committee["source"] = Source.COMMITTEE
    committee["reviewer_label"] = None
    hard_paths = store.hard_chunks()
    if hard_paths:
        hard = pd.concat([pd.read_parquet(p) for p in hard_paths]).set_index("id")
        reviewed = committee["id"].isin(hard.index)
        ids = committee.loc[reviewed, "id"]
        committee.loc[reviewed, "label"] = hard.loc[ids, "label"].to_numpy()
        committee.loc[reviewed, "source"] = hard.loc[ids, "source"].to_numpy()
        answered = reviewed & committee["source"].isin(EXPERT_SOURCES)
        committee.loc[answered, "reviewer_label"] = hard.loc[
            committee.loc[answered, "id"], "label"
        ].to_numpy()
        expert = committee["source"].isin((Source.ORACLE, Source.HUMAN))
        committee.loc[expert, "confidence"] = 1.0
        committee.loc[committee["source"] == Source.LLM, "confidence"] = None
    committee.loc[committee["id"].isin(store.gold_evidence().index), "source"] = Source.GOLD
    if store.posterior_path.is_file():
        # The trust stage's best-supported label and calibrated confidence (pipeline.trust).
        posterior = pd.read_parquet(store.posterior_path, columns=["id", "label", "confidence"])
        best = posterior.set_index("id").reindex(committee["id"])
        has = best["label"].notna().to_numpy()
        committee.loc[has, "label"] = best.loc[has, "label"].to_numpy()
        committee.loc[has, "confidence"] = best.loc[has, "confidence"].to_numpy()
    labels = rows[["row", "id", "text", "truncated"]].merge(
        committee[LABEL_COLUMNS[3:]].assign(id=committee["id"]),
        on="id",
        how="left",
    )
    skipped = labels["text"].isna()
    labels.loc[skipped, "source"] = Source.SKIPPED
    missing = labels["source"].isna()
    if missing.any() and not partial:
        raise RuntimeError(f"{int(missing.sum())} rows have no label yet; the run is incomplete")
    labels = labels[~missing]
    if (len(labels) != len(rows) and not partial) or labels["id"].duplicated().any():
        raise RuntimeError("labels do not match the input one-to-one")
    labels = labels.sort_values("row")[LABEL_COLUMNS]
    labels["chunk"] = labels["chunk"].astype("Int64")
    return labels


def labels_table(store: RunStore, labels: pd.DataFrame) -> pd.DataFrame:
    """What labels.* hold: the user's columns as given, then the run's `labels` (from
    assemble_labels, in input order) under their prefixed names. The text as labeled is not
    repeated: it is the user's text column (`aa_truncated` says when it was cut)."""
    position = store.rows().set_index("id")["row"]
    user = store.source().iloc[position.loc[labels["id"]].to_numpy()].reset_index(drop=True)
    ours = labels[list(OUTPUT_COLUMNS)].reset_index(drop=True)
    return pd.concat([user, ours.rename(columns=output_name)], axis=1)


def read_labels(store: RunStore) -> pd.DataFrame:
    """labels.parquet's run columns under their own names (id, label, source, ...)."""
    table = pd.read_parquet(store.labels_path, columns=[output_name(c) for c in OUTPUT_COLUMNS])
    return table.rename(columns=lambda name: name.removeprefix(OUTPUT_PREFIX))


def write_labels(store: RunStore, labels: pd.DataFrame) -> dict:
    """labels.parquet/csv; with --min-confidence P only the rows at P or above (and rows nobody
    could label), the rest in needs_review.csv for people. Returns the split's counts."""
    threshold = store.task().min_confidence
    table = labels_table(store, labels)
    unsure = pd.Series(False, index=table.index)
    if threshold is not None:
        confidence = table[output_name("confidence")]
        unsure = confidence.notna() & (confidence < threshold)
    write_parquet(table[~unsure], store.labels_path)
    with atomic_path(store.labels_csv_path) as tmp:
        table[~unsure].to_csv(tmp, index=False)
    if threshold is None:
        store.needs_review_path.unlink(missing_ok=True)
        return {"min_confidence": None, "below": 0}
    with atomic_path(store.needs_review_path) as tmp:
        table[unsure].to_csv(tmp, index=False)
    return {"min_confidence": threshold, "below": int(unsure.sum())}


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
                "learned_map": m.record.get("learned_map"),
            }
            for m in committee
        ],
    }
    if store.reliability_path.is_file():
        metrics["trust"] = read_json(store.reliability_path)
    rows = store.rows()
    if "gold" in rows:
        gold = rows.set_index("id")["gold"]
        # Rows the run was given as evidence are not scored: their label is the gold itself.
        scored = labelable[labelable["id"].map(gold).notna() & (labelable["source"] != Source.GOLD)]
        scores = classification_scores(
            scored["label"].tolist(), scored["id"].map(gold).tolist(), task.labels
        )
        if scores["rows"]:
            metrics["accuracy_vs_gold"] = scores["accuracy"]
            metrics["scores_vs_gold"] = scores
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
    lines += _trust_lines(metrics)
    split = metrics.get("confidence_split") or {}
    if split.get("min_confidence") is not None:
        lines += [
            "",
            f"--min-confidence {split['min_confidence']}: {split['below']} rows below it are in "
            "`needs_review.csv`, not in labels.*.",
        ]
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
    if "scores_vs_gold" in metrics:
        lines += [
            "",
            "## Against the gold column",
            "",
            "Rows with a gold label the run was not given as evidence; the confusion matrix's "
            "rows are the gold label, its columns the run's.",
            "",
            *scores_markdown(metrics["scores_vs_gold"]),
        ]
    lines += ["", "## Committee", "", "| model | label map |", "|---|---|"]
    for m in metrics["models"]:
        evidence = m.get("label_evidence") or {}
        mapping = ", ".join(
            f"{a} → {b}" + (" (user)" if str(evidence.get(a, "")).startswith(USER) else "")
            for a, b in m["label_map"].items()
        )
        learned = m.get("learned_map")
        if learned:
            mapping += (
                f"; learned from {learned['rows']} rows {learned['teacher']} labeled "
                f"(agreement {learned['agreement']:.0%}, chance {learned['chance']:.0%})"
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


def _interval(accuracy: dict) -> str:
    if not accuracy["rows"]:
        return "-"
    return (
        f"{accuracy['accuracy']:.1%} [{accuracy['low']:.1%}, {accuracy['high']:.1%}] "
        f"on {accuracy['rows']:g}"
    )


def _trust_lines(metrics: dict) -> list[str]:
    trust_metrics = metrics.get("trust")
    if not trust_metrics:
        return []
    final = trust_metrics["final_labels"]
    spread = (
        "which rows are right, and how far the confidence may be off as the known rows measured it"
        if "calibration" in trust_metrics
        else "which rows are right; no known rows measured the confidence, which may be off more"
    )
    lines = [
        "",
        "## How far the labels can be trusted",
        "",
        f"Estimated accuracy of the final labels (rows not given as gold): "
        f"{_interval(final['estimated_accuracy'])} rows (90% interval: {spread}). "
        "Every label is the one "
        "all sources' answers support best, the reviewer weighed by its measured confusion "
        f"matrix; {trust_metrics['known_rows']} rows with a known label anchor "
        "the estimate.",
    ]
    weights, test = (
        trust_metrics.get("committee_weights"),
        trust_metrics.get("committee_weights_test"),
    )
    if weights and test and test["used"]:
        lines.append(
            "The committee's members, weighed by how well their probabilities explain the known "
            f"and reviewed rows (against equal weights, p = {test['p']:.3f}): "
            + ", ".join(f"{slug} {w:.2f}" for slug, w in weights.items())
            + "."
        )
    elif test:
        lines.append(
            "The committee's members count alike: weights fitted to the known and reviewed rows "
            f"explained them no better than equal ones (p = {test['p']:.2f})."
        )
    check = trust_metrics.get("known_rows_check")
    if check:
        lines.append(
            f"On the known rows, each hidden in turn: these labels {_interval(check['posterior'])}"
            f", the committee's plurality {_interval(check['plurality'])}; where the two differ "
            f"({check['rows_differing']} rows) these are right on {check['posterior_right']}, "
            f"the plurality on {check['plurality_right']} (chance these are the better: "
            f"{check['posterior_better_probability']:.0%})."
        )
    if final["standing"] == "plurality":
        lines.append(
            "**The weighed labels are likely worse than the committee's plurality on the known "
            "rows, so the plurality stands.**"
        )
    debias = trust_metrics.get("reviewer_debias")
    if debias:
        lines.append(
            f"The reviewer's verdicts with its lean divided out, on the known rows: "
            f"{_interval(debias['corrected'])}; as it answered them: "
            f"{_interval(debias['as answered'])}; kept: {debias['kept']}."
        )
    versus = trust_metrics.get("reviewer_vs_committee") or {}
    if versus:
        lines.append(
            f"On the rows routed to review ({versus['basis']}): the reviewer "
            f"{_interval(versus['reviewer'])}, the committee's plurality "
            f"{_interval(versus['plurality'])}."
        )
        if versus["basis"] == "estimate":
            lines.append(
                "Without known rows this comes from how the reviewer and the committee agree, "
                "which cannot pin down how often the reviewer is right on rows the committee "
                "itself is unsure of, and can overrate it by 15 points or more (see the README). "
                "Give 30 or more gold rows (`--gold-column`) to measure it."
            )
        if versus["worse"]:
            lines.append(
                "**The reviewer measured worse than the committee where it was asked: its answers "
                "count only as much as its confusion matrix earns, and no fine-tuning learns "
                "from them.**"
            )
    calibration = trust_metrics.get("calibration")
    if calibration:
        # The sigmoid's pull toward the confidence as it is (None for isotonic, none, or a
        # run from before it).
        pull = calibration.get("prior")
        method = calibration["method"] + (
            f", held to the confidence as it is with strength {pull:g}" if pull else ""
        )
        lines.append(
            f"Calibration ({method}, {calibration['rows']} known rows): expected "
            f"calibration error {calibration['ece_before']:.3f} before, {calibration['ece']:.3f} "
            "after."
        )
        if metrics.get("plots", {}).get("reliability"):
            lines += ["", f"![reliability diagram]({metrics['plots']['reliability']})"]
    lines += [
        "",
        "| source | rows | accuracy expected (posterior) | accuracy measured (known rows) |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {s['rows']} | {_interval(s['expected'])} | {_interval(s['measured'])} |"
        for name, s in trust_metrics["sources"].items()
    ]
    labels = trust_metrics["labels"]
    lines += [
        "",
        "Recall per label (of the rows whose label is y, the share each source called y; known "
        "rows as their label, the rest as the posterior has them): a low cell is a blind spot.",
        "",
        "| source | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    lines += [
        f"| {name} | " + " | ".join(f"{s['recall'][y]:.2f}" for y in labels) + " |"
        for name, s in trust_metrics["sources"].items()
        if "recall" in s  # a reliability.json written before per-source matrices
    ]
    return lines


def _cycle_lines(metrics: dict) -> list[str]:
    lines = [
        f"Trigger: {metrics['beta']} reviewed hard samples since the last cycle, checked after "
        "each chunk. Training: the pool's hard samples less the gate, plus replayed unanimous "
        "committee labels, each reviewed row with its best-supported label. Gate: the user's gold "
        "rows where there are enough, else held-out hard samples plus audited rows where the "
        "reviewer and the whole committee agreed (`gate_source` in cycle.json); "
        "the candidate is kept only if it beats the version in use there, else rolled back.",
        "",
    ]
    if metrics.get("plots", {}).get("gate"):
        lines += [f"![gate accuracy per cycle]({metrics['plots']['gate']})", ""]
    lines += [
        "| cycle | chunks | hard train | replay | gate | model | gate before | gate after "
        "| verdict | train s | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    skipped = []
    for cycle in metrics["finetune_cycles"]:
        chunks = f"{min(cycle['chunks'])}-{max(cycle['chunks'])}"
        if cycle.get("skipped"):
            skipped.append(
                f"- cycle {cycle['cycle']} (chunks {chunks}) did not run: {cycle['skipped']}."
            )
        for slug, m in cycle["models"].items():
            verdict = f"kept v{m['version']}" if m["kept"] else f"rolled back to v{m['version']}"
            lines.append(
                f"| {cycle['cycle']} | {chunks} | {cycle.get('hard_train_rows', '-')} | "
                f"{cycle.get('replay_rows', '-')} | {cycle['gate_rows']} | {slug} | "
                f"{m['gate_before']:.3f} | {m['gate_after']:.3f} | {verdict} | "
                f"{m['train_seconds']} | {m.get('peak_memory_mb') or '-'} |"
            )
    lines += ["", *skipped] if skipped else []
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
    bins = metrics.get("trust", {}).get("calibration", {}).get("bins")
    if bins:
        path = reliability_plot(bins, store.plots_dir / "reliability.png")
        plots["reliability"] = store.relative(path)
    # A cycle the trust stage stood down trained nothing: it has no gate scores to draw.
    trained = [cycle for cycle in metrics["finetune_cycles"] if cycle["models"]]
    if trained:
        path = gate_plot(trained, store.plots_dir / "gate.png")
        plots["gate"] = store.relative(path)
    return plots


def write_outputs(store: RunStore, committee: Sequence[CommitteeMember]) -> dict:
    trust.update(store, committee)
    labels = assemble_labels(store, committee)
    split = write_labels(store, labels)
    metrics = compute_metrics(store, labels, committee)
    metrics["confidence_split"] = split
    metrics["committee_capped"] = write_capped(store, labels)
    metrics["plots"] = write_plots(store, metrics)
    write_json(metrics, store.metrics_path)
    with atomic_path(store.report_path) as tmp:
        tmp.write_text(render_report(metrics), encoding="utf-8")
    return metrics


def refresh_outputs(store: RunStore) -> None:
    """Re-export labels, metrics and report of a finished run so they carry the human answers."""
    write_outputs(store, store.committee())
