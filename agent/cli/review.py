"""The human review console: one hard sample at a time, one key per label, saved at once.

`autoannotator review RUN` opens it over a run's hard samples; a run with `--reviewer human`
opens it when the graph stops at its review interrupt (agent.pipeline.nodes.review).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from agent.cli.common import console, fail, out
from agent.pipeline.human import Answers, HumanItem, hard_items
from agent.pipeline.report import refresh_outputs
from agent.pipeline.runner import is_finished
from agent.store.runstore import InputError, RunStore

SKIP, UNDO, QUIT = "s", "u", "q"


@dataclass
class Outcome:
    answered: int = 0
    skipped: int = 0
    quit: bool = False

    def to_json(self) -> dict:
        return self.__dict__.copy()


def label_keys(labels: list[str]) -> dict[str, str]:
    """Key -> label: 1..9, then 0 for a tenth label."""
    if len(labels) > 10:
        raise ValueError("the review console has keys for up to 10 labels")
    return {str((i + 1) % 10): label for i, label in enumerate(labels)}


def read_key() -> str:
    return typer.getchar()


class ReviewConsole:
    """Walks a list of items; `read_key` is the keyboard (a scripted one in tests)."""

    def __init__(
        self,
        store: RunStore,
        labels: list[str],
        screen: Console,
        read_key: Callable[[], str] = read_key,
    ):
        self.answers = Answers(store)
        self.keys = label_keys(labels)
        self.screen = screen
        self.read_key = read_key

    def run(self, items: list[HumanItem]) -> Outcome:
        outcome = Outcome()
        done: list[tuple[int, bool]] = []  # (position, answered) per step, for undo
        position = 0
        while position < len(items):
            item = items[position]
            self.show(item, position, len(items))
            try:
                key = self.read_key().lower() or QUIT  # "": the scripted input ran out
            except EOFError:  # Ctrl-D
                key = QUIT
            if key in self.keys:
                self.answers.answer(item, self.keys[key])
                self.screen.print(f"[green]saved[/] {item.id} = {self.keys[key]}")
                outcome.answered += 1
                done.append((position, True))
                position += 1
            elif key == SKIP:
                outcome.skipped += 1
                done.append((position, False))
                position += 1
            elif key == UNDO:
                if not done:
                    self.screen.print("nothing to undo in this session")
                    continue
                position, answered = done.pop()
                if answered:
                    entry = self.answers.undo()
                    self.screen.print(f"[yellow]undone[/] {entry['id']} = {entry['label']}")
                    outcome.answered -= 1
                else:
                    outcome.skipped -= 1
            elif key == QUIT:
                outcome.quit = True
                break
            else:
                self.screen.print(f"unknown key {key!r}; {self._legend()}", markup=False)
        return outcome

    def show(self, item: HumanItem, position: int, total: int) -> None:
        votes = Table.grid(padding=(0, 2))
        for model, label in item.votes.items():
            votes.add_row(Text(model, style="dim"), Text(label))
        lines = [Text(item.text), Text(""), Text("committee votes:", style="bold"), votes]
        if item.suggestion is not None:
            lines.append(Text(f"LLM suggests: {item.suggestion}", style="cyan"))
        if item.answer is not None:
            lines.append(Text(f"your earlier answer: {item.answer}", style="green"))
        self.screen.print(
            Panel(
                Group(*lines),
                title=f"hard sample {position + 1}/{total}  id {item.id}  chunk {item.chunk}",
                title_align="left",
            )
        )
        self.screen.print(self._legend(), highlight=False, markup=False)

    def _legend(self) -> str:
        keys = "  ".join(f"[{k}] {label}" for k, label in self.keys.items())
        return f"{keys}  [s] skip  [u] undo  [q] quit"


def review_items(
    store: RunStore,
    items: list[HumanItem],
    screen: Console = console,
    read_key: Callable[[], str] = read_key,
) -> Outcome:
    """Open the console over `items`; every answer is in the run directory when it returns."""
    if not items:
        screen.print("no hard samples need a human here")
        return Outcome()
    outcome = ReviewConsole(store, store.task().labels, screen, read_key).run(items)
    screen.print(
        f"answered {outcome.answered}, skipped {outcome.skipped}"
        + ("; quit" if outcome.quit else "")
    )
    return outcome


def answer_interrupt(
    store: RunStore,
    payload: dict,
    screen: Console = console,
    read_key: Callable[[], str] = read_key,
) -> dict | None:
    """Answer the graph's review interrupt; the resume value, or None when the human quit."""
    items = [HumanItem.from_json(i) for i in payload["items"]]
    screen.print(f"[bold]chunk {payload['chunk']}: {len(items)} hard samples need your label[/]")
    outcome = review_items(store, items, screen, read_key)
    return None if outcome.quit else outcome.to_json()


def review(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    everything: bool = typer.Option(
        False, "--all", help="Every hard sample, also those the LLM already labeled."
    ),
) -> None:
    """Label a run's hard samples by hand: a human answer wins over the LLM's."""
    store = RunStore(run_dir)
    try:
        store.task()
    except InputError as err:
        fail(str(err))
    if not store.hard_dir.is_dir():
        fail(f"{run_dir}: no hard samples yet; the committee has not routed any chunk to review")
    outcome = review_items(store, hard_items(store, everything=everything))
    if outcome.answered and is_finished(store):
        refresh_outputs(store)
        out.print(f"labels and report updated: {store.report_path}", soft_wrap=True)
