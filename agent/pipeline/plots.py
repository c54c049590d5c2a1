"""The report's figures (matplotlib, PNG): escalation per chunk and gate accuracy per cycle."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display, and no GUI toolkit import on a server

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from agent.store.runstore import atomic_path


def _save(figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def escalation_plot(per_chunk: list[float], cycles: list[dict], path: Path) -> Path:
    """Share of each chunk routed to review; a dashed line after each fine-tune cycle."""
    figure, axes = plt.subplots(figsize=(6.4, 3.4))
    axes.plot(range(len(per_chunk)), [100 * r for r in per_chunk], marker="o")
    for cycle in cycles:
        after = max(cycle["chunks"]) + 0.5
        axes.axvline(after, color="grey", linestyle="--", linewidth=1)
        axes.annotate(
            f"fine-tune {cycle['cycle']}",
            (after, 0),
            xycoords=("data", "axes fraction"),
            xytext=(3, 3),
            textcoords="offset points",
            fontsize=8,
            color="grey",
        )
    axes.set_xlabel("chunk")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("routed to review (%)")
    axes.set_ylim(bottom=0)
    axes.set_title("Escalation per chunk")
    axes.grid(alpha=0.3)
    return _save(figure, path)


def gate_plot(cycles: list[dict], path: Path) -> Path:
    """Each SLM's gate accuracy before (old version) and after (candidate) every cycle."""
    figure, axes = plt.subplots(figsize=(6.4, 3.4))
    slugs = sorted({slug for cycle in cycles for slug in cycle["models"]})
    numbers = [cycle["cycle"] for cycle in cycles]
    for index, slug in enumerate(slugs):
        color = f"C{index}"
        before = [100 * c["models"][slug]["gate_before"] for c in cycles]
        after = [100 * c["models"][slug]["gate_after"] for c in cycles]
        axes.plot(numbers, after, marker="o", color=color, label=f"{slug} after")
        axes.plot(numbers, before, marker="x", linestyle=":", color=color, label=f"{slug} before")
        for number, cycle, value in zip(numbers, cycles, after, strict=True):
            if not cycle["models"][slug]["kept"]:
                axes.annotate("rolled back", (number, value), fontsize=7, color=color)
    axes.set_xlabel("fine-tune cycle")
    axes.set_ylabel("gate accuracy (%)")
    axes.set_xticks(numbers)
    axes.set_title("Gate accuracy per cycle (gate rows: cycle.json gate_source)")
    axes.grid(alpha=0.3)
    # Below the axes: inside, the legend would hide points of a run with few cycles.
    axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    return _save(figure, path)


def reliability_plot(bins: list[dict], path: Path) -> Path:
    """A reliability diagram: per confidence bin, how often the label was right on known rows."""
    figure, axes = plt.subplots(figsize=(4.2, 4.2))
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    confidence = [b["confidence"] for b in bins]
    axes.plot(confidence, [b["accuracy"] for b in bins], marker="o", label="final labels")
    for b in bins:
        axes.annotate(str(b["rows"]), (b["confidence"], b["accuracy"]), fontsize=7, color="grey")
    axes.set_xlabel("confidence")
    axes.set_ylabel("accuracy on known rows")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_title("Reliability diagram (rows per bin)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="upper left")
    return _save(figure, path)
