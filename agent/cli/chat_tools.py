"""What the chat may say about a run, read from its run directory and nowhere else.

Each fact is a plain function of the run store returning JSON-able data; `make_tools` wraps
them as langchain tools the chat LLM calls, and the slash commands render the same data, so
an answer about a run never comes from the model's memory.
"""

from __future__ import annotations

import json

import pandas as pd
from langchain_core.tools import BaseTool, StructuredTool

from agent.domain import NEEDS_HUMAN
from agent.store.ledger import calls_by_purpose, ledger_totals
from agent.store.runstore import RunStore, read_json

MAX_SCRIPT_CHARS = 6000  # a script shown to the local model must leave room in its context


def _hard(store: RunStore) -> pd.DataFrame:
    paths = store.hard_chunks()
    if not paths:
        return pd.DataFrame(columns=["id", "chunk", "committee_label", "votes", "label", "source"])
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def run_status(store: RunStore) -> dict:
    """Where the run stands: chunks labeled, rows escalated and by whom they were labeled."""
    task = store.task()
    # Chunks are cut as the run goes (agent.pipeline.chunking): count rows, not a chunk total.
    n_chunks = store.n_chunks()
    voted = len(store.voted_chunks())
    hard = _hard(store)
    status = {
        "run_dir": str(store.root),
        "task": task.description,
        "labels": task.labels,
        "reviewer": task.reviewer,
        "rows": len(store.rows()),
        "chunks_cut": n_chunks,
        "rows_not_yet_in_a_chunk": store.rows_left(n_chunks),
        "chunks_voted": voted,
        "escalated_so_far": len(hard),
        "hard_by_source": hard["source"].value_counts().to_dict(),
        "waiting_for_a_human": int(hard["source"].isin(NEEDS_HUMAN).sum()),
        "finished": store.metrics_path.is_file(),
    }
    if store.metrics_path.is_file():
        metrics = read_json(store.metrics_path)
        status["labels_by_source"] = metrics["by_source"]
        status["escalation_rate"] = metrics["escalation_rate"]
        status["fine_tune_cycles"] = len(metrics["finetune_cycles"])
        if "accuracy_vs_gold" in metrics:
            status["accuracy_vs_gold"] = metrics["accuracy_vs_gold"]
    return status


def llm_usage(store: RunStore) -> dict:
    """LLM calls, tokens and cost from ledger.jsonl, and how many hard rows the LLM labeled."""
    totals = ledger_totals(store.ledger_path)
    hard = _hard(store)
    return {
        **totals,
        "calls_by_purpose": calls_by_purpose(store.ledger_path),
        "rows_labeled_by_llm": int((hard["source"] == "llm").sum()),
        "rows_sent_to_review": len(hard),
        "cost_note": "cost_usd counts calls with a known price; a local model costs nothing",
    }


def list_scripts(store: RunStore) -> list[dict]:
    manifest = store.scripts_dir / "manifest.json"
    if not manifest.is_file():
        return []
    return [
        {k: e.get(k) for k in ("role", "model", "slug", "origin", "status", "path")}
        for e in read_json(manifest)["scripts"]
    ]


def show_script(store: RunStore, role: str, model: str = "") -> dict:
    """The source of one script: role deploy|annotate|finetune; model an id, slug or 1-based
    position in the committee (empty: the first)."""
    scripts = [s for s in list_scripts(store) if s["role"] == role]
    if not scripts:
        return {"error": f"no {role} script in this run; roles: deploy, annotate, finetune"}
    chosen = scripts[0]
    if model:
        committee = [m.slug for m in store.committee()]
        if model.isdigit() and 1 <= int(model) <= len(committee):
            model = committee[int(model) - 1]
        matches = [s for s in scripts if model in (s["model"], s["slug"])]
        # One script may serve the whole committee (its model is then not a member's id).
        chosen = matches[0] if matches else scripts[0]
    path = store.path(chosen["path"])
    source = path.read_text(encoding="utf-8") if path.is_file() else ""
    return {
        **chosen,
        "source": source[:MAX_SCRIPT_CHARS],
        "truncated": len(source) > MAX_SCRIPT_CHARS,
    }


def model_selection(store: RunStore) -> dict:
    """The committee and every model considered, with why a model was rejected or passed over."""
    if not store.models_path.is_file():
        return {"error": "no models selected yet"}
    data = read_json(store.models_path)

    def brief(m: dict) -> dict:
        return {
            "id": m["id"],
            "chosen": m.get("chosen", False),
            "score": m.get("score"),
            "rejected": m.get("rejected"),
            "note": m.get("note"),
            "label_map": m.get("label_map"),
        }

    return {
        "hub": data.get("hub"),
        "committee": [brief(m) for m in data["models"]],
        "considered": [brief(m) for m in data.get("considered", [])],
    }


def hard_examples(store: RunStore, n: int = 5) -> list[dict]:
    """Up to n hard samples: text, the committee's votes, the final label and who gave it."""
    hard = _hard(store).head(max(0, min(n, 50)))
    rows = []
    for chunk, part in hard.groupby("chunk", sort=True):
        texts = pd.read_parquet(store.input_chunk(int(chunk))).set_index("id")["text"]
        for row in part.to_dict("records"):
            rows.append(
                {
                    "id": row["id"],
                    "text": texts[row["id"]],
                    "votes": json.loads(row["votes"]),
                    "label": row["label"],
                    "source": row["source"],
                }
            )
    return rows


def make_tools(store: RunStore) -> list[BaseTool]:
    """The facts above as tools bound to one run."""

    def status() -> str:
        """Progress and counts of the run: rows, chunks, escalated rows, labels by source."""
        return json.dumps(run_status(store), default=str)

    def usage() -> str:
        """How many LLM calls the run made, tokens, cost in USD, rows the LLM labeled."""
        return json.dumps(llm_usage(store), default=str)

    def script(role: str, model: str = "") -> str:
        """Source of a generated script. role: deploy, annotate or finetune. model: model id,
        slug or its 1-based number in the committee; empty for the first."""
        return json.dumps(show_script(store, role, model), default=str)

    def selection() -> str:
        """The chosen committee and the models considered, with rejection reasons."""
        return json.dumps(model_selection(store), default=str)

    def examples(n: int = 5) -> str:
        """n hard samples (the committee disagreed): text, votes, final label, its source."""
        return json.dumps(hard_examples(store, n), default=str)

    return [
        StructuredTool.from_function(fn, name=name)
        for name, fn in (
            ("run_status", status),
            ("llm_usage", usage),
            ("show_script", script),
            ("model_selection", selection),
            ("hard_examples", examples),
        )
    ]
