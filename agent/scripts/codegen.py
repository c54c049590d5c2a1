"""The pipeline's scripts: the verified jinja2 templates, or written by the LLM and verified.

Section 3.1 of the paper: the meta-controller prompts the LLM (Table A, prompts/<role>.yaml) for
the scripts that deploy, run and fine-tune the SLMs. A candidate is checked before it runs, run
in the sandbox on a probe and checked after (agent.scripts.verify); a rejected one goes back to
the LLM with its error, up to `max_attempts` times.

--codegen auto (the default) tries each model's template through that same probe first and asks
the LLM only for a model whose template fails it: one model's request, with its folder's facts
and a worked example (agent.scripts.reference), and a fresh request naming the failing stage on
each retry. --codegen llm (the paper's setting) asks for one script per role for all the models
the templates can run (every script takes --model, so a slow local LLM writes three scripts, not
3k), with the template, the verified reference, as the fallback. Every attempt stays under
scripts/<role>/ (auto: scripts/<role>/<slug>/); scripts/<role>/<slug>.py is what the pipeline
runs and scripts/manifest.json says who wrote each and why.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import platformdirs
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from agent.domain import CodegenAttempt, CodegenPlanned, CommitteeMember, ModelKind, Progress
from agent.errors import ScriptUnavailable, StepFailed
from agent.llm.client import LLMClient
from agent.llm.endpoint import LLMUnavailable, PromptTooLong
from agent.llm.pricing import approx_tokens
from agent.prompting import load_prompt, render_template
from agent.scripts import contract, reference, scriptcache, verify
from agent.scripts.verify import TEMPLATE_KINDS, template_name
from agent.store.ledger import tokens_per_second
from agent.store.runstore import RunStore, read_json, write_json, write_parquet, write_text
from agent.task import TaskSpec
from sandbox.base import Limits, Result, Sandbox

ROLES = ("deploy", "annotate", "finetune")
MAX_ATTEMPTS = 3
# Rows every candidate is probed on; an annotate candidate on more, so the peer check
# (verify.check_peers) tells a right reading of a model from a wrong one.
PROBE_ROWS = 32
ANNOTATE_PROBE_ROWS = 64
# Beside a model's attempts: the worked example its request showed.
REFERENCE_NAME = "reference.py"
# Cached scripts of a model's kind tried before the LLM is asked: each try is a probe run.
CACHE_TRIES = 2
# A contract script is 60-120 lines; prompt, one failed answer and the reply must fit the
# local server's 4096-token context.
MAX_TOKENS = 1536
# The temperature a request is sampled at again after its answer repeated a rejected script:
# at the bench's 0.2 the bundled 1.5B model rewrote the rejected section byte for byte in 10 of
# the 12 retries of one round (bench/codegen_pass_rate.py, 5 sections of each new kind).
RESAMPLE_TEMPERATURE = 0.8
# Of a rejected script's error output, what a fresh request repeats: the prompt and the answer
# must fit the local server's context without the conversation before.
RETRY_STDERR_CHARS = 600
# A hung candidate costs at most this much beyond the speed limit it would break anyway.
SPEED_GRACE_S = 15.0
FENCED = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)


def render(
    role: str, model_id: str, task: TaskSpec, kind: str = ModelKind.SEQUENCE_CLASSIFICATION
) -> str:
    return render_template(
        template_name(role, kind),
        model_id=model_id,
        kind=kind,
        task_description=task.description.replace('"""', "'''"),
        batch_size=task.batch_size,
        max_length=task.max_length,
        lr=task.finetune_lr,
        weight_decay=task.finetune_weight_decay,
        epochs=task.finetune_epochs,
        seed=task.seed,
    )


def source_dir(source: str) -> Path:
    """Where the model's files are on this host: the source itself, else where local_source
    downloads a hub id to (per-user cache)."""
    if Path(source).is_dir():
        return Path(source)
    return Path(platformdirs.user_cache_dir("autoannotator")) / "models" / source.replace("/", "__")


def local_source(source: str) -> Path:
    """The model as a local folder: the source itself, or the host's download of a hub id
    (per-user cache), so a deploy script never needs the sandbox's network."""
    target = source_dir(source)
    if target == Path(source):
        return target
    try:
        return Path(snapshot_download(source, local_dir=target))
    except (HfHubHTTPError, OSError) as err:
        raise StepFailed(f"cannot download {source} from the hub: {err}") from None


def fresh_dir(path: Path) -> Path:
    """An empty directory the host made for one sandboxed run; whatever was there is gone
    (rmtree unlinks a symlink, it does not follow it)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def read_manifest(store: RunStore) -> dict:
    path = store.scripts_manifest_path
    return read_json(path) if path.is_file() else {"scripts": []}


def scripted(role: str, committee: Sequence[CommitteeMember]) -> list[CommitteeMember]:
    """The members that get a `role` script: every one, except that only the templates' kind
    is fine-tuned, since the host scores the fine-tuning gate as a transformers classifier."""
    if role != "finetune":
        return list(committee)
    return [m for m in committee if m.kind in TEMPLATE_KINDS]


def _missing(
    manifest: dict, role: str, committee: Sequence[CommitteeMember]
) -> list[CommitteeMember]:
    known = {(s["role"], s["slug"]) for s in manifest["scripts"]}
    return [m for m in committee if (role, m.slug) not in known]


def _install(
    store: RunStore, role: str, model: CommitteeMember, code: str, **record: object
) -> dict:
    """Write the script the pipeline runs for (role, model); return its manifest entry, with
    the model's kind (what `scripts show --diff` renders the template for, and which passed
    code a later model of the kind is shown)."""
    path = store.script_path(role, model.slug)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(code, path)
    return {
        "role": role,
        "slug": model.slug,
        "model": model.id,
        "kind": model.kind,
        "path": store.relative(path),
        "sha256": hashlib.sha256(code.encode()).hexdigest(),
        **record,
    }


def _install_templates(
    store: RunStore, task: TaskSpec, role: str, committee: Sequence[CommitteeMember], status: str
) -> list[dict]:
    return [
        _install(
            store,
            role,
            model,
            render(role, model.id, task, model.kind),
            origin="template",
            template=verify.template_file(role, model.kind),
            status=status,
        )
        for model in committee
    ]


def write_scripts(
    store: RunStore,
    task: TaskSpec,
    committee: Sequence[CommitteeMember],
    roles: Sequence[str] = ROLES,
) -> dict:
    """Render every (role, model) template script that is not already there (--codegen template)."""
    unrunnable = [f"{m.id} ({m.kind})" for m in committee if m.kind not in TEMPLATE_KINDS]
    if unrunnable:
        raise StepFailed(
            f"the templates cannot run {', '.join(unrunnable)}: only an LLM can write their "
            "scripts, with --codegen auto or llm, and they run only in Docker (or, unconfined, "
            "with --sandbox local)"
        )
    manifest = read_manifest(store)
    for role in roles:
        todo = _missing(manifest, role, scripted(role, committee))
        manifest["scripts"] += _install_templates(store, task, role, todo, "rendered")
    write_json(manifest, store.scripts_manifest_path)
    return manifest


def extract_code(answer: str) -> str:
    """The script in an LLM answer: its longest fenced block (closed or cut off), else all of it."""
    blocks = FENCED.findall(answer)
    code = max(blocks, key=len) if blocks else answer
    return code.strip() + "\n"


def prompt_messages(
    role: str, task: TaskSpec, committee: Sequence[CommitteeMember]
) -> list[BaseMessage]:
    templates = load_prompt(role)
    variables = {
        "task_description": task.description,
        "model_ids": [m.id for m in committee],
        "batch_size": task.batch_size,
        "max_length": task.max_length,
        "lr": task.finetune_lr,
        "weight_decay": task.finetune_weight_decay,
        "epochs": task.finetune_epochs,
        "seed": task.seed,
    }
    return [
        SystemMessage(templates["system"].render(**variables)),
        HumanMessage(templates["user"].render(**variables)),
    ]


def repair_messages(
    role: str, first: list[BaseMessage], answer: str, rejected: verify.Rejected
) -> list[BaseMessage]:
    """The original request, the rejected answer and why: only the latest, to fit the context."""
    stderr = rejected.stderr.strip()[-1500:]
    repair = load_prompt(role)["repair"].render(
        reason=f"{rejected.stage}: {rejected.reason}", stderr=stderr
    )
    return [*first, AIMessage(answer), HumanMessage(repair)]


@dataclass(frozen=True)
class ModelRequest:
    """One model's request (`messages`), its `retry(answer, rejected)` and `assemble`, which
    turns the code in an answer into the script that runs; `example` is its worked example's
    code (shown unless the prompt's skeleton is), about the size of the answer it asks for."""

    messages: list[BaseMessage]
    example: str
    retry: Callable[[str, verify.Rejected], list[BaseMessage]]
    assemble: Callable[[str], str]


def _whole(code: str) -> str:
    return code


def _in_harness(model: CommitteeMember, task: TaskSpec) -> Callable[[str], str]:
    """The annotate script for `model`: templates/annotate_harness.py.j2 around a section."""

    def assemble(section: str) -> str:
        return render_template(
            "annotate_harness",
            model_id=model.id,
            task_description=task.description.replace('"""', "'''"),
            labels=list(model.labels),
            batch_size=task.batch_size,
            max_length=task.max_length,
            section=section.strip("\n"),
        )

    return assemble


def model_request(
    store: RunStore,
    task: TaskSpec,
    role: str,
    model: CommitteeMember,
    manifest: dict,
    workdir: Path,
) -> ModelRequest:
    """The request for one model's script (prompts/<role>.yaml `model`): the folder's facts and
    a worked example; and its retry, a fresh request that names the failing stage, the error
    and the broken requirement instead of continuing the conversation (a small model answers
    "fix this" with the script it was just told is broken).

    For annotate the LLM writes only the model section (load_model, predict_proba) and the
    verified harness (templates/annotate_harness.py.j2) is the rest: what differs between
    models is how one is loaded and read, and a 1.5B model that rewrites a whole script breaks
    the parts that were right. The worked example is then a section, and the reference kept as
    `workdir`/reference.py (what `scripts show --diff` compares with) the harness around what
    the request showed: that section, or the prompt's skeleton where none of the kind passed."""
    templates = load_prompt(role)
    folder = local_source(model.source) if role == "deploy" else store.model_dir(model.slug, 0)
    # The hub's card: its files are on this host since the deploy (no download here).
    facts = reference.model_facts(folder, model, card=source_dir(model.source) / "README.md")
    if role == "annotate":
        assemble = _in_harness(model, task)
        template, part = render_template("annotate_section"), reference.model_section
    else:
        assemble, template, part = _whole, render(role, model.id, task, model.kind), _whole
    example_source, example, example_kind = reference.worked_example(
        manifest,
        role,
        model,
        template,
        lambda path: store.path(path).read_text(encoding="utf-8"),
        part,
    )
    example = example.strip()
    # Where no code of the model's kind has passed, the request shows the skeleton of a
    # section (annotate's prompt has one) instead of the example: kept as what it was shown.
    skeleton = templates["skeleton"].render() if "skeleton" in templates else None
    shown = skeleton if skeleton is not None and example_kind != model.kind else example
    write_text(assemble(shown), workdir / REFERENCE_NAME)
    request = templates["model"].render(
        model_id=model.id,
        task_description=task.description,
        example_source=example_source,
        example=example,
        example_kind=example_kind,
        skeleton=skeleton,
        **facts.as_prompt(),
    )
    system = SystemMessage(templates["system"].render())

    def retry(answer: str, rejected: verify.Rejected) -> list[BaseMessage]:
        again = templates["retry"].render(
            request=request,
            answer=extract_code(answer).strip(),
            model_id=model.id,
            stage=rejected.stage,
            reason=rejected.reason[:600],
            stderr=rejected.stderr.strip()[-RETRY_STDERR_CHARS:],
            contract=templates["contract"].render(),
        )
        return [system, HumanMessage(again)]

    return ModelRequest([system, HumanMessage(request)], example, retry, assemble)


# --- probes: what a candidate runs on, per role -----------------------------------------------

Verifier = Callable[[Path, str], None]  # (candidate script, attempt name) -> raises Rejected


@dataclass(frozen=True)
class Probe:
    """A role's verifier: `check` tries a candidate script; `template` tries the role's jinja2
    template on one model (--codegen auto), raising Rejected with why it cannot run it."""

    check: Verifier
    template: Callable[[CommitteeMember], None]

    def __call__(self, script: Path, name: str) -> None:
        self.check(script, name)


def _template_probe(
    store: RunStore, task: TaskSpec, role: str, check: Verifier
) -> Callable[[CommitteeMember], None]:
    """Run the role's rendered template through `check`, as a candidate would be."""

    def template(model: CommitteeMember) -> None:
        script = store.scripts_dir / role / f"template-{model.slug}.py"
        write_text(render(role, model.id, task, model.kind), script)
        try:
            check(script, f"template-{model.slug}")
        except verify.Rejected as rejected:
            raise verify.for_kind(rejected, role, model.kind) from None

    return template


def probe_rows(store: RunStore, rows: int = PROBE_ROWS) -> pd.DataFrame:
    """The run's own first texts: the probe every generated script is tried on."""
    return pd.read_parquet(store.input_chunk(0), columns=["id", "text"]).head(rows)


def _deploy_verifier(
    store: RunStore,
    task: TaskSpec,
    committee: Sequence[CommitteeMember],
    sandbox: Sandbox,
    device: str,
    limits: Limits,
) -> Probe:
    """Deploy the first model's real source into a scratch dir; it must load with its labels."""
    model = committee[0]
    source = local_source(model.source)
    workdir = store.scripts_dir / "deploy"
    texts = probe_rows(store)["text"].tolist()

    def check(script: Path, name: str) -> None:
        out = fresh_dir(workdir / f"{name}.out")
        try:
            verify.run_candidate(
                sandbox,
                script,
                contract.deploy_args(str(source), out),
                inputs=[source],
                output_dir=out,
                limits=limits,
                log=workdir / f"{name}.result.json",
                output=contract.MODEL_OUTPUT,
            )
            if model.kind == ModelKind.SEQUENCE_CLASSIFICATION:
                verify.check_model_dir(out, model.labels, source, texts)
            else:
                verify.check_deployed_whole(out, source, model.kind)
        finally:
            shutil.rmtree(out, ignore_errors=True)  # a model's weights; the verdict is kept

    return Probe(check, _template_probe(store, task, "deploy", check))


def _annotate_verifier(
    store: RunStore,
    task: TaskSpec,
    committee: Sequence[CommitteeMember],
    sandbox: Sandbox,
    device: str,
    limits: Limits,
) -> Probe:
    """Every deployed model on the probe rows: all its weights loaded, contract, the
    template's labels, its speed.

    probe/ holds what the host owns (rows, logs, the votes it accepted); every run, the
    template's included, writes into its own fresh out/<run>/ and nothing else. The template's
    answers (the canary) stay in memory, where no candidate can copy them.

    A model the template cannot run has no canary: its candidate's labels, in task labels,
    must agree with the plurality of the members already accepted in this run (their votes
    in probe/accepted-<slug>.parquet, written by the host once a member's script passes)
    beyond chance (verify.check_peers). generate_scripts therefore does the template kinds
    first.
    """
    workdir = store.scripts_dir / "annotate" / "probe"
    outdir = store.scripts_dir / "annotate" / "out"
    workdir.mkdir(parents=True, exist_ok=True)
    rows = probe_rows(store, ANNOTATE_PROBE_ROWS)
    rows_path = workdir / "rows.parquet"
    write_parquet(rows, rows_path)
    references: dict[str, tuple[Result, pd.Series] | verify.Rejected] = {}

    def probe(
        script: Path,
        model: CommitteeMember,
        model_dir: Path,
        run: str,
        limits: Limits,
        expected: pd.Series | None,
    ) -> tuple[Result, pd.DataFrame]:
        """One annotate run on the probe rows in its own fresh out/<run>/: (result, votes)."""
        out = fresh_dir(outdir / run)
        try:
            result = verify.run_candidate(
                sandbox,
                script,
                contract.annotate_args(
                    model_dir, rows_path, out / "votes.parquet", task, device, limits.threads
                ),
                inputs=[model_dir, rows_path],
                output_dir=out,
                limits=limits,
                log=workdir / f"{run}.result.json",
                output=contract.VOTES_OUTPUT,
            )
            verify.check_weights_loaded(result)
            return result, verify.check_votes(out / "votes.parquet", rows, model.labels, expected)
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def reference(model: CommitteeMember) -> tuple[Result, pd.Series] | verify.Rejected:
        """The template's run on the probe, once per model: the canary's answers and the speed
        bar, or why the template cannot run this model (then a candidate has neither)."""
        slug = model.slug
        if slug not in references:
            script = workdir / f"reference-{slug}.py"
            write_text(render("annotate", model.id, task), script)
            model_dir = store.model_dir(slug, 0)
            try:
                result, votes = probe(script, model, model_dir, f"reference-{slug}", limits, None)
                references[slug] = (result, votes.set_index("id")["label"])
            except verify.Rejected as rejected:
                references[slug] = verify.for_kind(rejected, "annotate", model.kind)
        return references[slug]

    def accepted_path(model: CommitteeMember) -> Path:
        return workdir / f"accepted-{model.slug}.parquet"

    def in_task_labels(model: CommitteeMember, labels: pd.Series) -> pd.Series:
        return labels.map(lambda label: model.label_map.get(label) or label)

    def accept(model: CommitteeMember, task_labels: pd.Series) -> None:
        """Keep a member's accepted probe labels (task labels) for the peer check."""
        write_parquet(task_labels.rename("label").reset_index(), accepted_path(model))

    def peers(model: CommitteeMember) -> list[pd.Series]:
        found = sorted(workdir.glob("accepted-*.parquet"))
        return [
            pd.read_parquet(path).set_index("id")["label"]
            for path in found
            if path != accepted_path(model)
        ]

    def template(model: CommitteeMember) -> None:
        outcome = reference(model)
        if isinstance(outcome, verify.Rejected):
            raise outcome
        accept(model, in_task_labels(model, outcome[1]))

    def check(script: Path, name: str) -> None:
        passed = []
        for model in committee:
            slug = model.slug
            outcome = reference(model)
            bar, expected = (None, None) if isinstance(outcome, verify.Rejected) else outcome
            # A hung candidate is stopped soon after it has broken the speed limit anyway.
            budget = (
                verify.SPEED_FACTOR * bar.duration_s + SPEED_GRACE_S if bar else limits.timeout_s
            )
            capped = replace(limits, timeout_s=min(limits.timeout_s, budget))
            model_dir = store.model_dir(slug, 0)
            result, votes = probe(script, model, model_dir, f"{name}.{slug}", capped, expected)
            write_parquet(votes, workdir / f"{name}.{slug}.parquet")
            task_labels = in_task_labels(model, votes.set_index("id")["label"])
            if bar is not None:
                verify.check_speed(result, bar)
            else:
                verify.check_peers(task_labels, peers(model))
            passed.append((model, task_labels))
        for model, task_labels in passed:
            accept(model, task_labels)

    return Probe(check, template)


def _finetune_verifier(
    store: RunStore,
    task: TaskSpec,
    committee: Sequence[CommitteeMember],
    sandbox: Sandbox,
    device: str,
    limits: Limits,
) -> Probe:
    """Fine-tune the first deployed model on a tiny set; model and metrics.json must come out."""
    model = committee[0]
    model_dir = store.model_dir(model.slug, 0)
    workdir = store.scripts_dir / "finetune"
    rows = probe_rows(store)
    texts = rows["text"].tolist()
    train, gate = verify.finetune_probe(rows, model.labels, workdir / "probe")
    eval_rows = len(pd.read_parquet(gate))

    def check(script: Path, name: str) -> None:
        out = fresh_dir(workdir / f"{name}.out")
        try:
            verify.run_candidate(
                sandbox,
                script,
                contract.finetune_args(model_dir, train, gate, out, device, limits.threads),
                inputs=[model_dir, train, gate],
                output_dir=out,
                limits=limits,
                log=workdir / f"{name}.result.json",
                output=contract.MODEL_OUTPUT,
            )
            metrics = verify.check_finetune_metrics(out / "metrics.json", eval_rows)
            write_json(metrics, workdir / f"{name}.metrics.json")
            verify.check_model_dir(out, model.labels, model_dir, texts)
        finally:
            shutil.rmtree(out, ignore_errors=True)

    return Probe(check, _template_probe(store, task, "finetune", check))


VERIFIERS = {
    "deploy": _deploy_verifier,
    "annotate": _annotate_verifier,
    "finetune": _finetune_verifier,
}


# --- the loop: prompt, answer, check, repair, fall back --------------------------------------


def spent(llm_s: float, verify_s: float) -> dict:
    return {"llm_seconds": round(llm_s, 2), "verify_seconds": round(verify_s, 2)}


def _transcript(messages: Sequence[BaseMessage]) -> str:
    return "\n\n".join(f"## {m.type}\n\n{m.content}" for m in messages) + "\n"


def generate_role(
    store: RunStore,
    task: TaskSpec,
    role: str,
    committee: Sequence[CommitteeMember],
    llm: LLMClient,
    verifier: Verifier,
    max_attempts: int = MAX_ATTEMPTS,
    progress: Progress = lambda event: None,
    workdir: Path | None = None,
    request: ModelRequest | None = None,
) -> tuple[str | None, dict]:
    """Ask for the role's script until one passes; (its code or None, the outcome record).

    The attempts are kept in `workdir` (default scripts/<role>/). `request` (one model's)
    replaces the Table A prompt, and its retry the repair that continues the conversation."""
    workdir = workdir or store.scripts_dir / role
    workdir.mkdir(parents=True, exist_ok=True)
    first = request.messages if request else prompt_messages(role, task, committee)
    messages = first
    why = "no attempt made"
    llm_s = verify_s = 0.0
    # A small model often answers a repair request with the script it was told is broken:
    # that script is not run again, and the same request is sampled once more, hotter.
    rejected_before: dict[str, tuple[int, verify.Rejected]] = {}
    temperature: float | None = None
    for attempt in range(1, max_attempts + 1):
        name = f"attempt-{attempt}"
        write_text(_transcript(messages), workdir / f"{name}.prompt.md")
        started = time.perf_counter()
        try:
            answer = llm.complete(
                messages, purpose=f"codegen-{role}", max_tokens=MAX_TOKENS, temperature=temperature
            )
        except LLMUnavailable as err:
            why = f"LLM unavailable: {err}"
            break
        except PromptTooLong as err:
            why = f"prompt past the LLM's context window: {err}"
            break
        llm_s += time.perf_counter() - started
        write_text(answer, workdir / f"{name}.response.md")
        code = request.assemble(extract_code(answer)) if request else extract_code(answer)
        script = workdir / f"{name}.py"
        write_text(code, script)
        started = time.perf_counter()
        verdict = {"attempt": attempt, "ok": True, "stage": "passed", "reason": ""}
        repeated = code in rejected_before
        try:
            if repeated:
                earlier, rejected = rejected_before[code]
                raise verify.Rejected(
                    rejected.stage,
                    f"{rejected.reason} (the same script as attempt {earlier}; not run again)",
                    rejected.stderr,
                )
            verify.static_check(code, role)
            verifier(script, name)
        except verify.Rejected as rejected:
            rejected_before.setdefault(code, (attempt, rejected))
            verdict.update(ok=False, stage=rejected.stage, reason=rejected.reason)
            if rejected.stderr:
                write_text(rejected.stderr, workdir / f"{name}.stderr.txt")
            if not repeated:
                messages = (
                    request.retry(answer, rejected)
                    if request
                    else repair_messages(role, first, answer, rejected)
                )
            why = f"{attempt} attempt(s) rejected, last at {rejected.stage}: {rejected.reason}"
        verify_s += time.perf_counter() - started
        write_json(verdict, workdir / f"{name}.verdict.json")
        progress(CodegenAttempt(role=role, attempt=attempt, stage=verdict["stage"]))
        if repeated and temperature is not None:
            break  # sampled hotter, it still wrote a script already rejected
        temperature = RESAMPLE_TEMPERATURE if repeated else None
        if verdict["ok"]:
            status = "passed-first-try" if attempt == 1 else f"repaired-after-{attempt - 1}"
            source = store.relative(workdir / f"{name}.py")
            record = {"origin": "llm", "status": status, "attempts": attempt, "source": source}
            return code, {**record, **spent(llm_s, verify_s)}
    fallback = {"origin": "template", "status": f"template-fallback: {why[:300]}"}
    return None, {**fallback, "attempts": attempt, **spent(llm_s, verify_s)}


def generate_scripts(
    store: RunStore,
    task: TaskSpec,
    committee: Sequence[CommitteeMember],
    roles: Sequence[str],
    llm: LLMClient | None,
    sandbox: Sandbox,
    *,
    device: str,
    limits: Limits,
    max_attempts: int = MAX_ATTEMPTS,
    progress: Progress = lambda event: None,
    mode: str = "llm",
    script_cache: Path | None = None,
) -> dict:
    """Verified scripts for `roles`; returns the manifest.

    mode "llm" (the paper's setting): the LLM writes one script per role for every model the
    templates can run (template fallback). mode "auto": each model's template is tried first
    and the LLM writes a script only for a model whose template fails its probe. Either way a
    model of a kind the templates cannot run gets its own LLM-written script, or the run stops
    saying why. Annotate's and finetune's verifiers run on the deployed models (version 0), so
    call this for deploy first, deploy, then for the rest. A done (role, model) is not redone.

    `script_cache` (agent.scripts.scriptcache): every LLM-written script that passes is kept
    there, and auto tries the kept scripts of a model's kind before asking the LLM.
    """
    manifest = read_manifest(store)
    for role in roles:
        members = scripted(role, committee)
        if mode == "llm":
            shared = [m for m in members if m.kind in TEMPLATE_KINDS]
            if _missing(manifest, role, shared):
                manifest["scripts"] += _written_for_all(
                    store,
                    task,
                    role,
                    shared,
                    llm,
                    sandbox,
                    device,
                    limits,
                    max_attempts,
                    progress,
                    script_cache,
                    peers_needed=len(shared) < len(members),
                )
                write_json(manifest, store.scripts_manifest_path)
            members = [m for m in members if m.kind not in TEMPLATE_KINDS]
        # The template kinds first: their accepted probe votes are what a script for a model
        # no template runs is checked against (the annotate verifier's peer check).
        todo = sorted(_missing(manifest, role, members), key=lambda m: m.kind not in TEMPLATE_KINDS)
        for model in todo:
            started = time.perf_counter()
            entry = _template_or_written(
                store,
                task,
                role,
                model,
                manifest,
                llm,
                sandbox,
                device,
                limits,
                max_attempts,
                progress,
                script_cache,
            )
            entry["seconds"] = round(time.perf_counter() - started, 2)
            manifest["scripts"].append(entry)
            write_json(manifest, store.scripts_manifest_path)
            store.log_timing("codegen", entry["seconds"], role=role, status=entry["status"])
    return manifest


def _written_for_all(
    store: RunStore,
    task: TaskSpec,
    role: str,
    committee: Sequence[CommitteeMember],
    llm: LLMClient | None,
    sandbox: Sandbox,
    device: str,
    limits: Limits,
    max_attempts: int,
    progress: Progress,
    script_cache: Path | None,
    *,
    peers_needed: bool,
) -> list[dict]:
    """One LLM-written script for the whole committee (--codegen llm), else the templates.
    `peers_needed`: a member of another kind follows, whose annotate script is checked
    against these members' accepted probe votes."""
    started = time.perf_counter()
    verifier = None
    if llm is None:
        code, record = None, {"status": "template-fallback: no LLM configured", "attempts": 0}
    else:
        verifier = VERIFIERS[role](store, task, committee, sandbox, device, limits)
        example = render(role, committee[0].id, task)
        why = "--codegen llm: the LLM writes every role's script (the paper's setting)"
        progress(_plan(store, role, committee, why, example, max_attempts))
        code, record = generate_role(
            store, task, role, committee, llm, verifier, max_attempts, progress
        )
        if code is not None and script_cache is not None:
            for kind in sorted({m.kind for m in committee}):
                scriptcache.keep_script(
                    script_cache, role, kind, code, run=store.run_id, model=committee[0].id
                )
    seconds = round(time.perf_counter() - started, 2)
    if code is None:
        if role == "annotate" and peers_needed:
            # The templates' probe votes are what a model no template runs is checked against.
            verifier = verifier or VERIFIERS[role](store, task, committee, sandbox, device, limits)
            for model in committee:
                with contextlib.suppress(verify.Rejected):
                    verifier.template(model)
        record.pop("origin", None)
        entries = _install_templates(store, task, role, committee, record.pop("status"))
        for entry in entries:
            entry.update(record, seconds=seconds)
    else:
        source = record.pop("source")
        entries = [
            _install(store, role, m, code, **record, from_attempt=source, seconds=seconds)
            for m in committee
        ]
    store.log_timing("codegen", seconds, role=role, status=entries[0]["status"])
    return entries


def _plan(
    store: RunStore,
    role: str,
    models: Sequence[CommitteeMember],
    why: str,
    example: str,
    max_attempts: int,
) -> CodegenPlanned:
    """What the LLM is about to write and how long an attempt should take: an answer about the
    size of the example it is shown, at the speed this run's calls measured so far."""
    return CodegenPlanned(
        role=role,
        models=[m.id for m in models],
        why=why,
        expected_tokens=approx_tokens(example),
        tokens_per_s=tokens_per_second(store.ledger_path),
        max_attempts=max_attempts,
    )


def _from_cache(
    role: str, model: CommitteeMember, probe: Probe, cache: Path, workdir: Path
) -> tuple[scriptcache.CachedScript, Path] | None:
    """The newest cached script of the model's kind that passes this run's own checks and
    probe, kept in `workdir` as cache-N.py; None when none does."""
    workdir.mkdir(parents=True, exist_ok=True)
    for number, cached in enumerate(scriptcache.cached_scripts(cache, role, model.kind), 1):
        if number > CACHE_TRIES:
            break
        name = f"cache-{number}"
        script = workdir / f"{name}.py"
        write_text(cached.code, script)
        verdict = {"ok": True, "stage": "passed", "reason": "", "run": cached.run}
        try:
            verify.static_check(cached.code, role)
            probe(script, name)
        except verify.Rejected as rejected:
            verdict.update(ok=False, stage=rejected.stage, reason=rejected.reason)
        write_json(verdict, workdir / f"{name}.verdict.json")
        if verdict["ok"]:
            return cached, script
    return None


def _template_or_written(
    store: RunStore,
    task: TaskSpec,
    role: str,
    model: CommitteeMember,
    manifest: dict,
    llm: LLMClient | None,
    sandbox: Sandbox,
    device: str,
    limits: Limits,
    max_attempts: int,
    progress: Progress,
    script_cache: Path | None,
) -> dict:
    """The model's verified template; where the template fails its probe, a script of the
    model's kind from the user's cache that passes it; else the script the LLM writes for this
    model alone (kept in the cache once it passes). StepFailed when none can run it."""
    probe = VERIFIERS[role](store, task, [model], sandbox, device, limits)
    try:
        probe.template(model)
    except verify.Rejected as rejected:
        why = f"the template failed its probe at {rejected.stage}: {rejected.reason}"
    else:
        return _install(
            store,
            role,
            model,
            render(role, model.id, task, model.kind),
            origin="template",
            template=verify.template_file(role, model.kind),
            status="template-verified",
        )
    workdir = store.scripts_dir / role / model.slug
    reused = _from_cache(role, model, probe, script_cache, workdir) if script_cache else None
    if reused is not None:
        cached, script = reused
        return _install(
            store,
            role,
            model,
            cached.code,
            origin="cache",
            status="cache-verified",
            why=why[:300],
            from_attempt=store.relative(script),
            from_run=cached.run,
            written_for=cached.model,
            **spent(0.0, 0.0),
        )
    if llm is None:
        raise ScriptUnavailable(
            f"{role} for {model.id}: {why}; no cached script of its kind passed, only an LLM "
            "can write one and this run has none (review with an LLM, or pass --codegen llm)",
            model.id,
        )
    request = model_request(store, task, role, model, manifest, workdir)
    progress(_plan(store, role, [model], why, request.example, max_attempts))
    code, record = generate_role(
        store,
        task,
        role,
        [model],
        llm,
        probe,
        max_attempts,
        progress,
        workdir=workdir,
        request=request,
    )
    if code is None:
        raise ScriptUnavailable(
            f"{role} for {model.id}: {why}; the LLM's scripts failed too: "
            f"{record['status'].removeprefix('template-fallback: ')}",
            model.id,
        )
    if script_cache is not None:
        scriptcache.keep_script(
            script_cache, role, model.kind, code, run=store.run_id, model=model.id
        )
    source = record.pop("source")
    return _install(
        store,
        role,
        model,
        code,
        **record,
        why=why[:300],
        from_attempt=source,
        reference=store.relative(workdir / REFERENCE_NAME),
    )
