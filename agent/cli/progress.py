"""The run's progress on the terminal: node events as rich progress bars and one-line notes."""

from __future__ import annotations

from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agent.cli.common import console


class ProgressView:
    """Turns node events into rich progress bars (or nothing with --quiet)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=quiet,
        )
        self.chunks = None
        self.review = None

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    @contextmanager
    def paused(self):
        """Hide the bars while the terminal belongs to someone else (the review console)."""
        self.bar.stop()
        try:
            yield
        finally:
            self.bar.start()

    def __call__(self, event: str, **data) -> None:
        if self.quiet:
            return
        if event == "selected":
            self.bar.console.print(f"committee: {', '.join(data['models'])}")
            if data.get("expected_escalation") is not None:
                self.bar.console.print(
                    f"expected escalation to review: {data['expected_escalation']:.0%} "
                    "(the committee's disagreement on a smoke-test sample of your rows)"
                )
        elif event == "review_estimate":
            self.bar.console.print(describe_estimate(data["estimate"]), highlight=False)
        elif event == "deployed":
            self.bar.console.print(f"deployed {data['model']}")
        elif event == "annotating":
            if self.chunks is None:
                self.chunks = self.bar.add_task("chunks", total=data["n_chunks"])
            # Chunk sizes adapt to the escalation seen so far, so the count is re-estimated.
            self.bar.update(self.chunks, completed=data["chunk"], total=data["n_chunks"])
        elif event == "voted":
            self.bar.console.print(
                f"chunk {data['chunk']}: {data['hard']}/{data['rows']} routed to review"
            )
        elif event == "review_progress":
            if self.review is None:
                self.review = self.bar.add_task("review", total=data["total"])
            self.bar.update(self.review, completed=data["done"], total=data["total"])
        elif event == "reviewed":
            if self.review is not None:
                self.bar.remove_task(self.review)
                self.review = None
            if self.chunks is not None:
                self.bar.update(self.chunks, completed=data["chunk"] + 1)
        elif event == "finetuning":
            self.bar.console.print(
                f"fine-tuning cycle {data['cycle']} on {data['samples']} reviewed hard samples"
            )
        elif event == "finetuned":
            for slug, m in data["models"].items():
                verdict = "kept" if m["kept"] else "rolled back"
                self.bar.console.print(
                    f"  {slug}: gate {m['gate_before']:.3f} -> {m['gate_after']:.3f} ({verdict}); "
                    f"{m['train_seconds']} s, peak {m['peak_memory_mb'] or '?'} MB"
                )


def describe_estimate(estimate) -> str:
    """One line for pipeline.review.ReviewEstimate, printed before the review spends anything."""
    cost = "price unknown" if estimate.cost_usd is None else f"~${estimate.cost_usd:.4f}"
    line = (
        f"LLM review estimate: ~{estimate.samples} hard samples, ~{estimate.calls} calls "
        f"({estimate.batch_size} per call), ~{estimate.tokens_in} tokens in / "
        f"~{estimate.tokens_out} out, {cost}"
    )
    if estimate.affordable is not None and estimate.affordable < estimate.samples:
        line += (
            f"; the budget covers ~{estimate.affordable}, the rest keep the committee's "
            "label (committee-capped)"
        )
    return line
