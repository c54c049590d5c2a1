"""Hugging Face datasets: the run's labels as a `datasets.Dataset`, its `aa_label` column a
`ClassLabel` of the task's labels (a row without a label holds None), saved with
`save_to_disk` beside a dataset card (README.md: the task, the labels, how each row was
labeled, the estimated accuracy, the models, the LLM's calls and cost), and pushed to the Hub
with `push_to_hub` when asked.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import pandas as pd
from huggingface_hub import DatasetCard, DatasetCardData, HfApi

from agent.domain import output_name
from agent.store.ledger import ledger_totals
from agent.store.runstore import RunStore, read_json

CARD_NAME = "README.md"


def to_dataset(store: RunStore, table: pd.DataFrame) -> datasets.Dataset:
    dataset = datasets.Dataset.from_pandas(table, preserve_index=False)
    return dataset.cast_column(output_name("label"), datasets.ClassLabel(names=store.task().labels))


def _accuracy_line(store: RunStore) -> str:
    if not store.reliability_path.is_file():
        return "Not measured: the run has no trust estimate yet."
    final = read_json(store.reliability_path)["final_labels"]["estimated_accuracy"]
    if not final["rows"]:
        return "Not measured: no row's label was known to the run."
    return (
        f"{final['accuracy']:.1%} (90% interval {final['low']:.1%} to {final['high']:.1%}), "
        f"estimated on {final['rows']:g} rows by the run's trust stage (rows given as gold "
        "excluded)."
    )


def dataset_card(store: RunStore, table: pd.DataFrame) -> DatasetCard:
    task = store.task()
    labels, sources = table[output_name("label")], table[output_name("source")]
    llm = ledger_totals(store.ledger_path)
    models = [m.id for m in store.committee()]
    data = DatasetCardData(
        task_categories=["text-classification"],
        pretty_name=task.description,
        tags=["autoannotator"],
        size_categories=["n<1K"] if len(table) < 1000 else None,
    )
    lines = [
        f"# {task.description}",
        "",
        f"Labeled by AutoAnnotator: {len(table)} rows, text column `{task.text_column}`. The "
        "columns of the labeled file come first, unchanged; the run's follow, prefixed `aa_` "
        f"(`{output_name('label')}` is a ClassLabel; `{output_name('source')}` says who labeled "
        f"the row, `{output_name('confidence')}` how sure the run is).",
        "",
        "## Labels",
        "",
        "| id | label | rows |",
        "|---|---|---|",
        *[
            f"| {i} | {label} | {int((labels == label).sum())} |"
            for i, label in enumerate(task.labels)
        ],
        "",
        "## How each row was labeled",
        "",
        "| source | rows |",
        "|---|---|",
        *[f"| {source} | {count} |" for source, count in sources.value_counts().items()],
        "",
        "## Estimated accuracy",
        "",
        _accuracy_line(store),
        "",
        "## Models",
        "",
        "Committee of small classifiers: " + (", ".join(f"`{m}`" for m in models) or "none") + ".",
        "",
        "## LLM calls and cost",
        "",
        f"{llm['calls']} calls (+{llm['cache_hits']} answered from cache), tokens "
        f"{llm['tokens_in']} in / {llm['tokens_out']} out, ${llm['cost_usd']:.4f}.",
    ]
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


def write_dataset(
    store: RunStore, table: pd.DataFrame, folder: Path, push_to_hub: str | None = None
) -> list[Path]:
    """`save_to_disk` into `folder` with the card as folder/README.md; with `push_to_hub`, the
    card and then the dataset go to that Hub repository (token: the HF_TOKEN environment
    variable or `hf auth login`): the card first, so `push_to_hub` keeps its text and adds the
    features (the ClassLabel) to its YAML header."""
    folder = Path(folder)
    dataset = to_dataset(store, table)
    card = dataset_card(store, table)
    dataset.save_to_disk(str(folder))
    card.save(folder / CARD_NAME)
    if push_to_hub:
        HfApi().create_repo(push_to_hub, repo_type="dataset", exist_ok=True)
        card.push_to_hub(push_to_hub, repo_type="dataset")
        dataset.push_to_hub(push_to_hub)
    return [folder, folder / CARD_NAME]
