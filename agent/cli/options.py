"""The options the `autoannotator` commands share, declared once.

Each is a `typing.Annotated` alias (typer's documented style): a command names it in its
signature with its default (`sandbox: SandboxOption = "auto"`), so `run`, `eval`, `resume`,
`chat` and `demo` read and teach them the same way. `--help` groups them in panels. What a
command got is gathered once into a frozen, keyword-only dataclass: `Engine` (where and how a
run executes; it becomes the core's RunOptions) and `Review` (the LLM review's TaskSpec fields).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

from agent.api import engine_options
from agent.cli.common import console, fail
from agent.committee.labels import machine_label_map_cache
from agent.committee.selection import machine_smoke_cache
from agent.domain import Routing, ShotLayout
from agent.pipeline.deploycache import machine_deploy_cache
from agent.pipeline.engine import ENGINES
from agent.pipeline.runner import DEFAULT_LLM_CONCURRENCY, RunOptions
from agent.scripts.scriptcache import machine_script_cache
from agent.task import DEFAULT_REVIEW_SHOTS, parse_label_map
from sandbox.base import Sandbox
from sandbox.factory import KINDS, make_sandbox

# The --help panels; options outside them (the data, the task) are listed first.
PIPELINE = "Pipeline"
ENGINE = "Models, sandbox and device"
LLM = "LLM endpoint"
REVIEW = "LLM review"
TRUST = "Trust: evidence and confidence"

DEVICES = ("auto", "cpu", "cuda")
DEFAULT_STEP_TIMEOUT_S = 3600.0


def _one_of(flag: str, choices: tuple[str, ...]):
    """An option callback: a value outside `choices` fails in one line, exit code 2."""
    listed = f"{', '.join(choices[:-1])} or {choices[-1]}"

    def check(value: str | None) -> str | None:
        if value is not None and value not in choices:
            fail(f"{flag} takes {listed}, not {value!r}")
        return value

    return check


# ---- the task -------------------------------------------------------------------------------
LabelsOption = Annotated[
    str, typer.Option("--labels", help="Comma-separated labels, e.g. positive,negative,neutral.")
]
TaskOption = Annotated[
    str,
    typer.Option(
        "--task", help="What to label, in plain words; it picks the models and briefs the LLM."
    ),
]
TextColumnOption = Annotated[
    str, typer.Option("--text-column", help="The column holding the texts to label.")
]
LabelMapOption = Annotated[
    list[str] | None,
    typer.Option(
        "--label-map",
        help="What the models' labels mean in yours, over any automatic mapping: "
        "negative=bearish,positive=bullish for every model with those labels, "
        "MODEL_ID:LABEL_0=bearish for one model. Repeatable.",
        show_default=False,
    ),
]

# ---- models, sandbox, device -------------------------------------------------------------
HubOption = Annotated[
    str | None,
    typer.Option(
        "--hub",
        help="Model hub: a folder of HF-format models, or `hf`. "
        "Default: $AUTOANNOTATOR_HUB, else the bundled demo catalog (built on first use).",
        rich_help_panel=ENGINE,
    ),
]
SandboxOption = Annotated[
    str,
    typer.Option(
        "--sandbox",
        callback=_one_of("--sandbox", KINDS),
        help="Where scripts run: docker, local (a subprocess, far less isolated), or auto "
        "(Docker when an engine answers, else local with template scripts only).",
        rich_help_panel=ENGINE,
    ),
]
DeviceOption = Annotated[
    str,
    typer.Option(
        "--device",
        callback=_one_of("--device", DEVICES),
        help="Where the models run: auto (the GPU when the sandbox gets one, else the CPU), "
        "cpu or cuda.",
        rich_help_panel=ENGINE,
    ),
]
StepTimeoutOption = Annotated[
    float,
    typer.Option(
        "--step-timeout",
        help="Seconds one sandboxed script (deploy, annotate a chunk, fine-tune) may run.",
        rich_help_panel=ENGINE,
    ),
]
EngineOption = Annotated[
    str | None,
    typer.Option(
        "--engine",
        callback=_one_of("--engine", ENGINES),
        help="Who runs the annotate steps: local (this process), ray (shards as Ray tasks on "
        "the cluster at --ray-address or $RAY_ADDRESS, else a local Ray instance; needs the "
        "ray extra) or auto (ray when an address is set). Default: local; resume: the run's.",
        show_default=False,
        rich_help_panel=ENGINE,
    ),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="The Ray cluster for --engine ray, e.g. ray://head:10001 or auto. Default: "
        "$RAY_ADDRESS, else a new local instance. The run directory must be on storage every "
        "node mounts at the same path.",
        rich_help_panel=ENGINE,
    ),
]

# ---- the LLM endpoint ----------------------------------------------------------------------
BaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--llm-base-url",
        envvar="OPENAI_BASE_URL",
        help="OpenAI-compatible endpoint. Unset: a local llama.cpp server that starts and stops "
        "with the command.",
        rich_help_panel=LLM,
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--llm-api-key",
        envvar="OPENAI_API_KEY",
        show_default=False,
        help="Key for --llm-base-url.",
        rich_help_panel=LLM,
    ),
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--llm-model",
        envvar="AUTOANNOTATOR_LLM_MODEL",
        help="Model name at the endpoint.",
        rich_help_panel=LLM,
    ),
]
ConcurrencyOption = Annotated[
    int,
    typer.Option(
        "--llm-concurrency",
        min=1,
        help="Review requests in flight at once on a remote endpoint (a 429 is retried with "
        "backoff by the client); the local server takes one at a time.",
        rich_help_panel=LLM,
    ),
]
GgufOption = Annotated[
    str | None,
    typer.Option(
        "--gguf",
        envvar="AUTOANNOTATOR_GGUF",
        help="GGUF file for the local server (default: packaged Qwen2.5-Coder-1.5B).",
        rich_help_panel=LLM,
    ),
]

# ---- output --------------------------------------------------------------------------------
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bars or prompts; for scripts.")
]

# ---- the pipeline ----------------------------------------------------------------------------
EpsilonOption = Annotated[
    float | None,
    typer.Option(
        "--epsilon",
        help="Route a sample to review when its disagreement U(x) >= ε. Default 1/k: every "
        "disagreement goes to review, as in the paper.",
        show_default=False,
        rich_help_panel=PIPELINE,
    ),
]
ChunkSizeOption = Annotated[
    int,
    typer.Option(
        "--chunk-size",
        help="Rows in the first chunk; later chunks (between a quarter and 4x this) are sized so "
        "fine-tuning starts as the reviewed hard pool reaches β.",
        rich_help_panel=PIPELINE,
    ),
]
ReplayOption = Annotated[
    float,
    typer.Option(
        "--replay-ratio",
        help="Fine-tuning replays this many unanimous committee labels per reviewed hard "
        "sample, so the SLMs keep what they knew (0: hard samples only).",
        rich_help_panel=PIPELINE,
    ),
]
CodegenOption = Annotated[
    str | None,
    typer.Option(
        "--codegen",
        callback=_one_of("--codegen", ("auto", "llm", "template")),
        help="Who writes the deploy/annotate/finetune scripts: auto (each model's template "
        "where its probe passes, the LLM only for a model it cannot run), llm (the LLM "
        "writes every script, verified, template fallback) or template (never the LLM). "
        "Default: auto.",
        show_default=False,
        rich_help_panel=PIPELINE,
    ),
]

# ---- the LLM review ------------------------------------------------------------------------
ReviewBatchOption = Annotated[
    str,
    typer.Option(
        "--review-batch",
        help="Samples per LLM review call: N, or auto (1 on the local server, where single "
        "calls reuse the prompt prefix; 20 on a remote endpoint, which charges the "
        "instructions per call).",
        rich_help_panel=REVIEW,
    ),
]
ReviewShotsOption = Annotated[
    int,
    typer.Option(
        "--review-shots",
        min=0,
        max=32,
        help="Labeled rows of the run shown to the reviewer LLM before each sample as examples, "
        "from your gold rows, human answers and rows the whole committee agreed on, every label "
        "represented (see --review-shot-layout); 0: none. Default 16: on 300 rows each with the "
        "bundled 1.5B model and drafted label meanings, macro-F1 44 -> 66 on tweets, 33 -> 76 "
        "on financial news, 32 -> 80 on toxicity, at 0.7-1.0x the seconds per sample of the "
        "bare prompt (bench/review_quality.py).",
        rich_help_panel=REVIEW,
    ),
]
ReviewShotLayoutOption = Annotated[
    ShotLayout,
    typer.Option(
        "--review-shot-layout",
        help="Which examples --review-shots shows: fixed (default) the same typical rows of "
        "every label before each sample, so the local server evaluates them once per chunk; "
        "nearest each sample's own nearest rows, a new prompt every sample.",
        rich_help_panel=REVIEW,
    ),
]
ReviewProbabilitiesOption = Annotated[
    bool,
    typer.Option(
        "--review-probabilities/--no-review-probabilities",
        help="Ask the LLM endpoint for the answer's token log-probabilities, so each review "
        "carries a probability per label and the trust stage weighs a sure answer more than a "
        "coin flip. An endpoint that returns none is said once; its answers count as labels.",
        rich_help_panel=REVIEW,
    ),
]
ReviewDebiasOption = Annotated[
    bool,
    typer.Option(
        "--review-debias/--no-review-debias",
        help="Divide the reviewer's lean to some labels (its mean probability per label over "
        "the samples it answered, no gold needed) out of each answer before taking its label: "
        "a small LLM that says neutral for nearly everything then names the other labels "
        "where its probabilities point to them. Needs --review-probabilities.",
        rich_help_panel=REVIEW,
    ),
]
ReviewBatchApiOption = Annotated[
    bool,
    typer.Option(
        "--review-batch-api",
        help="Send each chunk's review requests as one job through the endpoint's Batch API "
        "(OpenAI's and compatible providers': half the price, answered within 24 h) instead of "
        "call by call; a killed run picks the job up again on resume. Remote endpoints only.",
        rich_help_panel=REVIEW,
    ),
]
ReviewSelfCheckOption = Annotated[
    float | None,
    typer.Option(
        "--review-self-check",
        min=0.0,
        max=1.0,
        metavar="P",
        help="Ask the LLM once more, with the committee's votes per label shown, when its "
        "answer's own probability is below P (needs --review-probabilities); off by default: "
        "on the demo's hard rows the 1.5B model changed most unsure answers and got worse "
        "(README, Self-check).",
        rich_help_panel=REVIEW,
    ),
]
MaxCallsOption = Annotated[
    int | None,
    typer.Option(
        "--max-llm-calls",
        help="Cap on paid LLM review calls over the whole run (resume included); past it, hard "
        "samples keep the committee's label as committee-capped.",
        rich_help_panel=REVIEW,
    ),
]
MaxCostOption = Annotated[
    float | None,
    typer.Option(
        "--max-cost",
        help="Cap on the LLM review's cost in USD (needs a known price).",
        rich_help_panel=REVIEW,
    ),
]
PriceInOption = Annotated[
    float | None,
    typer.Option(
        "--price-in",
        envvar="AUTOANNOTATOR_PRICE_IN",
        help="USD per 1M input tokens. Default: 0 on the local server, else a built-in table "
        "(gpt-4o-mini, gpt-4o, gpt-4.1-mini, gpt-4.1-nano, gpt-3.5-turbo).",
        rich_help_panel=REVIEW,
    ),
]
PriceOutOption = Annotated[
    float | None,
    typer.Option(
        "--price-out",
        envvar="AUTOANNOTATOR_PRICE_OUT",
        help="USD per 1M output tokens (with --price-in).",
        rich_help_panel=REVIEW,
    ),
]
LabelDescOption = Annotated[
    list[str] | None,
    typer.Option(
        "--label-desc",
        help='What a label means, for the reviewer LLM; repeatable: --label-desc "bearish=expects '
        'the price to fall". Without it the LLM drafts one line per label from --task (saved '
        "in task.json, shown before review).",
        rich_help_panel=REVIEW,
    ),
]
DraftLabelDescOption = Annotated[
    bool,
    typer.Option(
        "--draft-label-desc/--no-draft-label-desc",
        help="Without --label-desc, let the LLM draft what each label means (off: the reviewer "
        "sees the label names alone).",
        rich_help_panel=REVIEW,
    ),
]
LabelWordsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--label-words",
        help="Words the reviewer LLM sees instead of labels, mapped back: "
        "bearish=negative,bullish=positive.",
        rich_help_panel=REVIEW,
    ),
]


@dataclass(frozen=True, kw_only=True)
class Engine:
    """Where and how a command's runs execute (not what they label); a resume may change it."""

    hub: str | None = None
    sandbox: str = "auto"
    device: str = "auto"
    llm_base_url: str | None = None
    llm_api_key: str | None = None
    llm_model: str | None = None
    gguf: str | None = None
    llm_concurrency: int = DEFAULT_LLM_CONCURRENCY
    step_timeout: float = DEFAULT_STEP_TIMEOUT_S
    engine: str | None = None  # None: local for a new run, the run's own on resume
    ray_address: str | None = None
    quiet: bool = False


def open_sandbox(kind: str, device: str, *, run_id: str | None = None) -> Sandbox:
    """The sandbox every command uses. `run_id` (RunStore.run_id) labels a run's Docker
    containers, and the ones a killed runner left behind are removed when it is opened."""
    return make_sandbox(kind, device=device, run_id=run_id)


def run_options(engine: Engine, *, run_id: str | None) -> RunOptions:
    """The core's RunOptions for `engine`: the hub opened, the sandbox of run `run_id` made."""
    return engine_options(
        run_id=run_id,
        hub=engine.hub,
        sandbox=engine.sandbox,
        device=engine.device,
        llm_base_url=engine.llm_base_url,
        llm_api_key=engine.llm_api_key,
        llm_model=engine.llm_model,
        gguf=engine.gguf,
        llm_concurrency=engine.llm_concurrency,
        # Deploy each model once per machine: later runs copy the checked v0 from here.
        deploy_cache=machine_deploy_cache(),
        # Scripts the LLM wrote are reused for the next model of their kind, on any run.
        script_cache=machine_script_cache(),
        # Ask the LLM what a model's labels mean once per machine, not once per run.
        label_map_cache=machine_label_map_cache(),
        # A second run on the same rows smoke-tests no candidate again.
        smoke_cache=machine_smoke_cache(),
        step_timeout=engine.step_timeout,
        engine=engine.engine or "local",
        ray_address=engine.ray_address,
        status=None if engine.quiet else (lambda line: console.print(line)),
    )


def label_map_fields(items: list[str] | tuple[str, ...] | None) -> dict:
    """The TaskSpec fields `--label-map` sets; a malformed item fails in one line."""
    try:
        shared, per_model = parse_label_map(items or ())
    except ValueError as err:
        fail(str(err))
        raise  # unreachable; fail() exits
    return {"label_map": shared, "model_label_maps": per_model}


def _pairs(option: str, items: tuple[str, ...]) -> dict[str, str]:
    """`label=text` items (`--label-desc`, `--label-words`) as a dict; a bad one fails."""
    pairs = {}
    for item in items:
        label, sep, text = item.partition("=")
        if not sep or not label.strip() or not text.strip():
            fail(f"{option} takes label=text, not {item!r}")
        pairs[label.strip()] = text.strip()
    return pairs


AuditShareOption = Annotated[
    float,
    typer.Option(
        "--audit-share",
        min=0.0,
        max=1.0,
        help="Share of the rows the committee agreed on that the reviewer labels too (at most "
        "50 a chunk, counted in the budget), so its reliability is measured where the truth is "
        "likely; 0 turns the audit off.",
        rich_help_panel=TRUST,
    ),
]
RoutingOption = Annotated[
    Routing,
    typer.Option(
        "--routing",
        help="Which rows go to review: uncertainty (default, the paper's rule U(x) >= epsilon); "
        "gain: rows where one answer from the reviewer, weighed by its measured confusion "
        "matrix, is expected to change the label (at least 0.05), once it has answered a "
        "chunk; margin: the 60% of the paper's rows where the committee's top label leads the "
        "next by least (same accuracy on tweets, 2 points less on financial news). Within "
        "a budget, rows with the largest expected "
        "gain (margin: the narrowest margin) go first.",
        rich_help_panel=TRUST,
    ),
]
MinConfidenceOption = Annotated[
    float | None,
    typer.Option(
        "--min-confidence",
        min=0.0,
        max=1.0,
        help="Write only rows whose calibrated confidence is at least this to labels.*, the "
        "rest to needs_review.csv for people.",
        rich_help_panel=TRUST,
    ),
]


def label_words_field(items: tuple[str, ...] | list[str] | None) -> dict[str, str]:
    """`--label-words bearish=negative,bullish=positive` (repeatable) as a dict."""
    words = tuple(w for group in items or () for w in group.split(",") if w.strip())
    return _pairs("--label-words", words)


@dataclass(frozen=True, kw_only=True)
class Review:
    """The LLM review options `run` and `eval` share, as given on the command line."""

    batch: str = "auto"
    shots: int = DEFAULT_REVIEW_SHOTS
    shot_layout: ShotLayout = ShotLayout.FIXED
    probabilities: bool = True
    debias: bool = True
    self_check: float | None = None
    batch_api: bool = False
    max_calls: int | None = None
    max_cost: float | None = None
    price_in: float | None = None
    price_out: float | None = None
    label_desc: tuple[str, ...] = ()
    draft_desc: bool = True
    label_words: tuple[str, ...] = ()
    audit_share: float = 0.05
    routing: Routing = Routing.UNCERTAINTY
    min_confidence: float | None = None

    def task_fields(self) -> dict:
        """The TaskSpec fields these options set; a malformed value fails in one line."""
        if self.batch != "auto" and not self.batch.isdigit():
            fail(f"--review-batch takes auto or a number of samples per call, not {self.batch!r}")
        return {
            "review_batch": self.batch if self.batch == "auto" else int(self.batch),
            "review_shots": self.shots,
            "review_shot_layout": self.shot_layout.value,
            "review_probabilities": self.probabilities,
            "review_debias": self.debias,
            "review_self_check": self.self_check,
            "review_batch_api": self.batch_api,
            "max_llm_calls": self.max_calls,
            "max_cost_usd": self.max_cost,
            "price_in": self.price_in,
            "price_out": self.price_out,
            "label_descriptions": _pairs("--label-desc", self.label_desc),
            "draft_label_descriptions": self.draft_desc,
            "label_words": label_words_field(self.label_words),
            "audit_share": self.audit_share,
            "routing": self.routing.value,
            "min_confidence": self.min_confidence,
        }
