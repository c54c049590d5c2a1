"""The run's progress on the terminal: node events as rich progress bars and one-line notes."""

from __future__ import annotations

from contextlib import contextmanager
from functools import singledispatchmethod

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agent.cli.common import console
from agent.committee.labels import USER
from agent.domain import (
    Aligned,
    Annotating,
    CodegenAttempt,
    CodegenPlanned,
    Deployed,
    Dropped,
    Event,
    Finetuned,
    FinetuneStarted,
    LabelsDescribed,
    Reported,
    Reviewed,
    ReviewEstimated,
    Reviewing,
    ReviewProgress,
    Selected,
    Voted,
)


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

    def __call__(self, event: Event) -> None:
        if not self.quiet:
            self.show(event)

    @singledispatchmethod
    def show(self, event: Event) -> None:
        raise TypeError(f"no view for the progress event {event!r}")

    @show.register
    def _(self, event: Selected) -> None:
        if event.considered is not None and event.seconds is not None:
            self.bar.console.print(
                f"selected {len(event.models)} of {event.considered} candidates "
                f"in {event.seconds:.0f} s"
            )
        self.bar.console.print(f"committee: {', '.join(event.models)}")
        if event.expected_escalation is not None:
            self.bar.console.print(
                f"expected escalation to review: {event.expected_escalation:.0%} "
                "(the committee's disagreement on a smoke-test sample of your rows)"
            )

    @show.register
    def _(self, event: LabelsDescribed) -> None:
        lines = [f"label meanings the LLM drafted for its review (edit them in {event.path}):"]
        lines += [f"  {label}: {meaning}" for label, meaning in event.descriptions.items()]
        self.bar.console.print("\n".join(lines), highlight=False, markup=False)

    @show.register
    def _(self, event: ReviewEstimated) -> None:
        self.bar.console.print(describe_estimate(event.estimate), highlight=False)

    @show.register
    def _(self, event: CodegenPlanned) -> None:
        self.bar.console.print(describe_codegen_plan(event), highlight=False, markup=False)

    @show.register
    def _(self, event: Deployed) -> None:
        self.bar.console.print(f"deployed {event.model}")

    @show.register
    def _(self, event: Dropped) -> None:
        self.bar.console.print(
            f"dropped {event.model} from the committee ({event.remaining} go on): {event.reason}",
            highlight=False,
            markup=False,
        )

    @show.register
    def _(self, event: Annotating) -> None:
        if self.chunks is None:
            self.chunks = self.bar.add_task("chunks", total=event.n_chunks)
        # Chunk sizes adapt to the escalation seen so far, so the count is re-estimated.
        self.bar.update(self.chunks, completed=event.chunk, total=event.n_chunks)

    @show.register
    def _(self, event: Voted) -> None:
        self.bar.console.print(f"chunk {event.chunk}: {event.hard}/{event.rows} routed to review")

    @show.register
    def _(self, event: ReviewProgress) -> None:
        if self.review is None:
            self.review = self.bar.add_task("review", total=event.total)
        self.bar.update(self.review, completed=event.done, total=event.total)

    @show.register
    def _(self, event: Reviewed) -> None:
        if self.review is not None:
            self.bar.remove_task(self.review)
            self.review = None
        if self.chunks is not None:
            self.bar.update(self.chunks, completed=event.chunk + 1)

    @show.register
    def _(self, event: FinetuneStarted) -> None:
        self.bar.console.print(
            f"fine-tuning cycle {event.cycle} on {event.samples} reviewed hard samples"
        )

    @show.register
    def _(self, event: Finetuned) -> None:
        if event.skipped:
            self.bar.console.print(f"  fine-tune cycle {event.cycle} stood down: {event.skipped}")
        for slug, m in event.models.items():
            verdict = "kept" if m["kept"] else "rolled back"
            self.bar.console.print(
                f"  {slug}: gate {m['gate_before']:.3f} -> {m['gate_after']:.3f} ({verdict}); "
                f"{m['train_seconds']} s, peak {m['peak_memory_mb'] or '?'} MB"
            )

    @show.register
    def _(self, event: Aligned) -> None:
        # Only maps that rename something: a model whose labels are the task's says nothing.
        for model_id, mapping in event.maps.items():
            line = describe_label_map(mapping, event.evidence.get(model_id, {}))
            learned = event.learned.get(model_id)
            if line and learned:
                line += (
                    f" (learned from {learned['rows']} rows {learned['teacher']} labeled: "
                    f"agreement {learned['agreement']:.0%}, chance {learned['chance']:.0%})"
                )
            if line:
                self.bar.console.print(f"labels of {model_id}: {line}", highlight=False)

    # Not shown, on purpose: the codegen verdicts under scripts/ (`autoannotator scripts`), a
    # chunk's review shows as its bar (ReviewProgress), and the command prints the report's
    # summary when the run ends.
    @show.register(CodegenAttempt)
    @show.register(Reviewing)
    @show.register(Reported)
    def _(self, event: Event) -> None:
        pass


def describe_codegen_plan(plan: CodegenPlanned) -> str:
    """`the LLM writes annotate for org/emb (why): ~900 tokens an attempt at 12 tokens/s ...`"""
    speed = (
        f"at {plan.tokens_per_s:.0f} tokens/s measured on this endpoint, about "
        f"{plan.expected_tokens / plan.tokens_per_s / 60:.1f} min an attempt"
        if plan.tokens_per_s
        else "no answer speed measured on this endpoint yet"
    )
    return (
        f"the LLM writes {plan.role} for {', '.join(plan.models)} ({plan.why}): "
        f"~{plan.expected_tokens} tokens an attempt, {speed}, at most {plan.max_attempts} attempts"
    )


def describe_label_map(mapping: dict, evidence: dict) -> str:
    """`negative → bearish (your --label-map), NEG → negative`: the renamed labels only."""
    return ", ".join(
        f"{model_label} → {task_label}"
        + (" (your --label-map)" if str(evidence.get(model_label, "")).startswith(USER) else "")
        for model_label, task_label in mapping.items()
        if model_label != task_label
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
