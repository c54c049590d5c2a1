"""`autoannotator chat`: a request in plain words becomes a confirmed task, a run, and answers.

The LLM fills the task form (JSON validated by pydantic); whatever it leaves out is asked for,
and the form can always be edited by hand (`labels=a,b,c`), so a weak local model or none at
all still gets a user to a run. The run is the same graph `run` drives; questions about it are
answered through tools over the run directory (agent.cli.chat_tools).
"""

from __future__ import annotations

import json
import readline
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import platformdirs
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage
from pydantic import BaseModel, Field, ValidationError
from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from rich.table import Table

from agent.cli import chat_tools
from agent.cli.common import USER_ERRORS
from agent.cli.progress import ProgressView
from agent.cli.review import answer_interrupt, review_items
from agent.committee.selection import SelectionError
from agent.llm.endpoint import LLMUnavailable, make_chat_model, resolve_endpoint
from agent.llm.local_server import open_endpoint
from agent.llm.pricing import Price, price_table
from agent.pipeline.human import hard_items
from agent.pipeline.report import refresh_outputs
from agent.pipeline.runner import RunOptions, create_run, is_finished, preflight, run_graph
from agent.prompting import load_prompt
from agent.store.runstore import InputError, RunStore, read_table
from agent.task import TaskSpec, format_label_map, parse_label_map

MAX_TOOL_ROUNDS = 4
# A review call is the Table B prompt (~110 tokens) plus the text, and a one-word answer.
REVIEW_TOKENS_IN, REVIEW_TOKENS_OUT = 160, 4
CONFIRM = {"y", "yes", "ok", "go", "run", "confirm"}
CANCEL = {"n", "no", "cancel"}

HELP = """\
Describe a labeling job, e.g. `label data/tweets.csv for sentiment, positive/negative/neutral,
spend at most $2`. I fill in the form and ask for what is missing; edit any field by hand with
`field=value` (several: `labels=a,b,c; k=3`), then `y` to run.
While it runs: Ctrl-C pauses at the last checkpoint, /resume continues. Hard samples that need
you are shown one by one (a key per label, s skip, u undo, q quit = pause).
After a run, ask about it: "how many went to the LLM?", "show the annotate script of model 2",
"why was model X rejected?", "show 5 hard examples", "what did this cost?".
Commands: /status /models /scripts /review /report /resume /open RUN_DIR /new /help /quit"""


class SpecDraft(BaseModel):
    """The task form as the LLM fills it from the user's words; None: not said yet."""

    data_path: str | None = None
    text_column: str | None = None
    labels: list[str] | None = None
    description: str | None = None
    max_cost_usd: float | None = Field(default=None, ge=0)
    reviewer: Literal["llm", "human"] | None = None


# Hand edits: what the user types before `=` -> the form field (and how to read the value).
FIELDS = {
    "data": "data_path",
    "file": "data_path",
    "text_column": "text_column",
    "column": "text_column",
    "labels": "labels",
    "task": "description",
    "reviewer": "reviewer",
    "budget": "max_cost_usd",
    "k": "k",
    "beta": "beta",
    "epsilon": "epsilon",
    "chunk_size": "chunk_size",
    "label_map": "label_map",
    "map": "label_map",
}
RUN_SETTINGS = ("k", "beta", "epsilon", "chunk_size")  # TaskSpec fields the LLM never fills


@dataclass
class Form:
    """The draft plus hand-set run settings; `missing` says what to ask for next."""

    draft: SpecDraft = field(default_factory=SpecDraft)
    # TaskSpec fields set by hand: the run settings, and the label map (`label_map` and
    # `model_label_maps`, as --label-map sets them)
    settings: dict[str, Any] = field(default_factory=dict)

    def merge(self, update: SpecDraft) -> None:
        said = {k: v for k, v in update.model_dump().items() if v not in (None, [], "")}
        self.draft = self.draft.model_copy(update=said)

    def edit(self, text: str) -> list[str]:
        """Apply `field=value; field=value`; returns errors, one line each."""
        errors = []
        for part in filter(None, (p.strip() for p in text.split(";"))):
            key, _, value = (s.strip() for s in part.partition("="))
            name = FIELDS.get(key.lower())
            if name is None:
                errors.append(f"unknown field {key!r}; fields: {', '.join(FIELDS)}")
            elif name in RUN_SETTINGS:
                self.settings[name] = value
            elif name == "label_map":
                try:
                    shared, per_model = parse_label_map([value])
                except ValueError as err:
                    errors.append(str(err).replace("--label-map", key))
                else:
                    self.settings.update(label_map=shared, model_label_maps=per_model)
            else:
                parsed: object = value or None
                if name == "labels" and value:
                    parsed = [x.strip() for x in value.replace("/", ",").split(",") if x.strip()]
                try:
                    self.draft = SpecDraft.model_validate({**self.draft.model_dump(), name: parsed})
                except ValidationError as err:
                    errors.append(f"{key}: {err.errors()[0]['msg']}")
        return errors

    def missing(self) -> str | None:
        """The question for the first thing a run cannot do without, or None."""
        d = self.draft
        if not d.data_path:
            return "Which file should I label? (CSV, TSV, JSONL or parquet; `data=PATH`)"
        try:
            columns = list(read_table(Path(d.data_path)).columns)
        except InputError as err:
            return f"{err} (`data=PATH` to change it)"
        if d.text_column is None and "text" in columns:
            self.draft = d = d.model_copy(update={"text_column": "text"})
        if d.text_column not in columns:
            listed = ", ".join(map(str, columns))
            return f"Which column holds the text? Columns: {listed} (`column=NAME`)"
        if not d.labels or len(d.labels) < 2:
            return "Which labels? (`labels=positive,negative,neutral`)"
        if not d.description:
            return "What should the labels say about each text, in a few words? (`task=...`)"
        return None

    def task(self) -> TaskSpec:
        d = self.draft
        return TaskSpec(
            description=d.description,
            labels=d.labels,
            data_path=d.data_path,
            text_column=d.text_column,
            reviewer=d.reviewer or "llm",
            max_cost_usd=d.max_cost_usd,
            **self.settings,
        )


def estimate(task: TaskSpec, price) -> dict:
    """Worst case before any model runs: every row routed to the reviewer."""
    rows = read_table(Path(task.data_path))
    labelable = int(rows[task.text_column].astype("string").str.strip().fillna("").ne("").sum())
    calls = labelable if task.reviewer == "llm" else 0
    cost = None
    if price is not None:
        cost = calls * (REVIEW_TOKENS_IN * price.input + REVIEW_TOKENS_OUT * price.output) / 1e6
    return {
        "rows": len(rows),
        "labelable": labelable,
        "chunks": -(-labelable // task.chunk_size),
        "max_review_calls": calls,
        "max_cost_usd": cost,
    }


class SpecReader:
    """The LLM side of the form: the user's words -> SpecDraft (None when it gave no valid one)."""

    def __init__(self, model: BaseChatModel):
        self.templates = load_prompt("chat")
        self.structured = model.with_structured_output(
            SpecDraft, method="json_mode", include_raw=True
        )

    def read(self, draft: SpecDraft, message: str) -> SpecDraft | None:
        messages = [
            SystemMessage(self.templates["spec_system"].render()),
            HumanMessage(
                self.templates["spec_user"].render(form=draft.model_dump_json(), message=message)
            ),
        ]
        result = self.structured.invoke(messages)
        return None if result.get("parsing_error") else result["parsed"]


def answer_question(model: BaseChatModel, store: RunStore, question: str) -> str:
    """Answer from tool results over the run directory; the model picks the tools."""
    tools = {t.name: t for t in chat_tools.make_tools(store)}
    task = store.task()
    system = load_prompt("chat")["answer_system"].render(task=task.description, labels=task.labels)
    bound = model.bind_tools(list(tools.values()))
    messages = [SystemMessage(system), HumanMessage(question)]
    for _ in range(MAX_TOOL_ROUNDS):
        reply = bound.invoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            return reply.text
        for call in reply.tool_calls:
            tool = tools.get(call["name"])
            if tool is None:
                messages.append(ToolMessage(f"no tool {call['name']!r}", tool_call_id=call["id"]))
            else:
                messages.append(tool.invoke(call))
    return "I could not settle on an answer; /status, /models and /scripts show the run."


def history_path() -> Path:
    return Path(platformdirs.user_state_dir("autoannotator")) / "chat_history"


@dataclass
class ChatSession:
    """One REPL: the form, the current run, and the commands. `handle` takes one input line."""

    screen: Console
    model: BaseChatModel | None
    make_options: Callable[[Path], RunOptions]  # the options of the run in that directory
    run_dir: Path | None = None
    price: Price | None = None  # the reviewer's endpoint's, for the estimate
    # Form settings every new form starts with (`chat --label-map`: label_map, model_label_maps)
    preset: dict[str, Any] = field(default_factory=dict)
    form: Form = field(default_factory=Form)
    confirming: bool = False
    store: RunStore | None = None
    last_form: Form | None = None  # the form of the run just started, back if selection fails

    def __post_init__(self):
        self.reader = SpecReader(self.model) if self.model is not None else None
        self.form = self.new_form()

    def new_form(self) -> Form:
        return Form(settings=dict(self.preset))

    def handle(self, line: str) -> bool:
        """False when the user asked to leave."""
        line = line.strip()
        if not line:
            return True
        if line.startswith("/"):
            return self.command(line)
        if self.confirming:
            word = line.lower().rstrip("!.")
            if word in CONFIRM:
                self.confirming = False
                self.start()
                return True
            if word in CANCEL:
                self.confirming = False
                self.form = self.new_form()
                self.say("Dropped. Describe another job when you like.")
                return True
        if self.store is not None and not self.confirming and self.form.draft == SpecDraft():
            self.ask(line)
            return True
        self.fill(line)
        return True

    # ---- the form -----------------------------------------------------------------------
    def fill(self, line: str) -> None:
        head = line.split("=", 1)[0].strip().lower()
        if "=" in line and head in FIELDS:
            for error in self.form.edit(line):
                self.say(f"[red]{error}[/]")
        elif self.reader is None:
            self.say("No LLM here: fill the form by hand, e.g. `data=FILE; labels=a,b; task=...`")
        else:
            with self.screen.status("reading your request"):
                update = self.reader.read(self.form.draft, line)
            if update is None:
                self.say("I could not read that into the form; set fields by hand: `labels=a,b`")
            else:
                self.form.merge(update)
        question = self.form.missing()
        if question:
            self.confirming = False
            self.say(question)
            return
        self.show_form()

    def show_form(self) -> None:
        try:
            task = self.form.task()
            numbers = estimate(task, self.price)
        except (ValidationError, InputError) as err:
            message = err.errors()[0]["msg"] if isinstance(err, ValidationError) else str(err)
            self.say(f"[red]{message}[/] (fix it with `field=value`)")
            self.confirming = False
            return
        table = Table(title="task", show_header=False, title_justify="left")
        for name, value in (
            ("data", task.data_path),
            ("column", task.text_column),
            ("labels", ", ".join(task.labels)),
            ("task", task.description),
            ("reviewer", task.reviewer),
            ("label_map", format_label_map(task) or "none (models' labels mapped automatically)"),
            ("budget", _money(self.form.draft.max_cost_usd) or "none set"),
            ("k", task.k),
            ("beta", task.beta),
            ("chunk_size", task.chunk_size),
        ):
            table.add_row(name, str(value))
        self.screen.print(table)
        cost = numbers["max_cost_usd"]
        cost = f"at most {_money(cost)}" if cost is not None else "cost unknown (no price known)"
        self.say(
            f"{numbers['labelable']} rows to label in {numbers['chunks']} chunks; "
            f"at most {numbers['max_review_calls']} LLM review calls, {cost} "
            "(only rows the committee disagrees on reach the reviewer)."
        )
        budget = self.form.draft.max_cost_usd
        if budget is not None and (numbers["max_cost_usd"] or 0) > budget:
            self.say(f"[yellow]the worst case is above your budget of {_money(budget)}[/]")
        self.say("Run it? `y` to start, `field=value` to edit, `n` to drop.")
        self.confirming = True

    # ---- running ------------------------------------------------------------------------
    def start(self) -> None:
        task = self.form.task()
        target = self.run_dir or Path("runs") / f"chat-{datetime.now():%Y%m%d-%H%M%S}"
        self.run_dir = None  # a second job gets its own directory
        try:
            RunStore.check_free(target)  # before its sandbox removes the run id's containers
            options = self.make_options(target)
            preflight(task, options)
            self.store = create_run(task, target)
        except USER_ERRORS as err:
            self.say(f"[red]{err}[/]")
            return
        self.last_form, self.form = self.form, self.new_form()
        self.say(f"run directory: {self.store.root}")
        self.execute(options, resume=False)

    def execute(self, options: RunOptions, *, resume: bool) -> None:
        with ProgressView(False) as view:

            def on_interrupt(payload: dict):
                with view.paused():
                    return answer_interrupt(self.store, payload, self.screen)

            options = replace(options, progress=view, on_interrupt=on_interrupt)
            try:
                run_graph(self.store, options, resume=resume)
            except KeyboardInterrupt:
                self.say("paused at the last checkpoint; /resume continues")
                return
            except SelectionError as err:
                self.selection_failed(err)
                return
            except USER_ERRORS as err:
                self.say(f"[red]{err}[/] (fix it, then /resume)")
                return
        if not is_finished(self.store):
            self.say("paused for human review; /resume continues, /review answers first")
            return
        status = chat_tools.run_status(self.store)
        self.say(
            f"done: {status['rows']} rows, labels by source {status['labels_by_source']}; "
            f"labels in {self.store.labels_csv_path}. Ask me about the run, or /report."
        )

    def selection_failed(self, err: SelectionError) -> None:
        """No committee: the fix changes the task, so the form comes back with the edit to
        make, and `y` starts a new run (the failed one labeled nothing)."""
        self.say(f"[red]{escape(err.summary)}[/]")
        if err.details:
            self.say(f"[dim]{escape(err.details)}[/]")
        if self.last_form is None:
            self.say("Start a new job with the fix: /new")
            return
        self.form, self.last_form, self.store = self.last_form, None, None
        edit = "; ".join(f"{name}={value}" for name, value in err.fix.items())
        self.say(
            f"Fix the form (`{edit}`), then `y` for a new run."
            if edit
            else "Edit the form, then `y` for a new run."
        )
        self.show_form()

    # ---- questions ----------------------------------------------------------------------
    def ask(self, question: str) -> None:
        if self.model is None:
            self.say("No LLM here to answer questions; /status, /models, /scripts, /report do.")
            return
        with self.screen.status("looking it up in the run directory"):
            answer = answer_question(self.model, self.store, question)
        self.screen.print(Markdown(answer))

    # ---- slash commands -----------------------------------------------------------------
    def command(self, line: str) -> bool:
        name, _, arg = line[1:].partition(" ")
        name = name.lower()
        if name in ("quit", "exit", "q"):
            return False
        if name == "help":
            self.screen.print(HELP, highlight=False, markup=False)
        elif name == "new":
            self.form, self.confirming = self.new_form(), False
            self.say("Describe the new job.")
        elif name == "open":
            store = RunStore(Path(arg.strip()))
            try:
                store.task()
            except InputError as err:
                self.say(f"[red]{err}[/]")
            else:
                self.store = store
                self.say(f"opened {store.root}")
        elif self.store is None:
            self.say("No run yet: describe a job, or /open RUN_DIR.")
        elif name == "status":
            self._json(chat_tools.run_status(self.store))
        elif name == "models":
            self._models()
        elif name == "scripts":
            table = Table("role", "model", "origin", "status", "path")
            for s in chat_tools.list_scripts(self.store):
                table.add_row(s["role"], s["model"], s["origin"], s["status"], s["path"])
            self.screen.print(table)
        elif name == "review":
            outcome = review_items(self.store, hard_items(self.store), self.screen)
            if outcome.answered and is_finished(self.store):
                refresh_outputs(self.store)
        elif name == "report":
            if self.store.report_path.is_file():
                self.screen.print(Markdown(self.store.report_path.read_text(encoding="utf-8")))
            else:
                self.say("No report yet: the run has not finished.")
        elif name == "resume":
            try:
                options = self.make_options(self.store.root)
            except USER_ERRORS as err:
                self.say(f"[red]{err}[/]")
            else:
                self.execute(options, resume=True)
        else:
            self.say(f"unknown command /{name}; /help lists them")
        return True

    def _models(self) -> None:
        selection = chat_tools.model_selection(self.store)
        if "error" in selection:
            self.say(selection["error"])
            return
        table = Table("model", "chosen", "score", "why not")
        for m in selection["considered"] or selection["committee"]:
            why = m["rejected"] or m["note"] or ""
            table.add_row(m["id"], "yes" if m["chosen"] else "", str(m["score"]), why)
        self.screen.print(table)

    def _json(self, data: dict) -> None:
        self.screen.print_json(json.dumps(data, default=str))

    def say(self, text: str) -> None:
        self.screen.print(text, soft_wrap=True)


def _money(value: float | None) -> str | None:
    return None if value is None else f"${value:.4f}".rstrip("0").rstrip(".")


def repl(session: ChatSession, read_line: Callable[[str], str] = input) -> None:
    """Read lines until /quit or end of input; history persists across sessions."""
    path = history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        readline.read_history_file(path)
    session.say("AutoAnnotator chat. Describe a labeling job; /help for more.")
    try:
        while True:
            try:
                line = read_line("you> ")
            except KeyboardInterrupt:
                session.say("(/quit to leave)")
                continue
            except EOFError:
                break
            if not session.handle(line):
                break
    finally:
        readline.write_history_file(path)


def open_chat_model(stack: ExitStack, base_url, api_key, model, gguf, status):
    """(chat model, endpoint, price) on the configured or local LLM; (None, None, None) without."""
    try:
        remote = resolve_endpoint(base_url, api_key, model)
        if remote is None:
            status("starting the local LLM (a minute on a small machine)")
        endpoint = stack.enter_context(open_endpoint(base_url, api_key, model, gguf))
    except LLMUnavailable as err:
        status(f"no LLM ({err}); the form still works by hand")
        return None, None, None
    price = price_table(endpoint).get(endpoint.model)  # nothing on the local server
    return make_chat_model(endpoint, max_retries=1), endpoint, price
