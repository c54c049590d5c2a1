"""How often the LLM writes a script that passes verification, per role and model kind.

For each role and each model kind (`standard`: a sequence classifier the templates run;
`multi-label` and `embedding-head`: the demo catalog's kinds only an LLM-written script runs),
`--n` independent generations (a fresh cache each, sampled at `--temperature` with a different
seed) go through the loop `--codegen auto` uses for a model whose template fails: one model's
request (its folder's facts and a worked example, scripts.codegen.model_request), the static
check, the sandbox probe on the task's demo rows, the contract (and, where the template runs
the model, its canary and speed; where it does not, its labels' agreement with those of its
task's models the template runs, deployed beside it as in a run), and up to `--attempts`
fresh retries. The template's own
verdict on the model is recorded first. A kind the templates cannot run is not fine-tuned, so
finetune is measured on `standard` only.

    python bench/codegen_pass_rate.py [--n 3] [--roles annotate] [--kinds multi-label,...]
        [--rows N] [--gguf PATH | --base-url URL --api-key KEY --model NAME] [--threads 2]
        [--out FILE]

Prints one row per role and kind (first-try passes, passes within the attempts, median
minutes) and writes every generation's outcome and timing as JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd
import platformdirs

from agent.domain import CommitteeMember, ModelKind
from agent.errors import Rejected
from agent.hub.demo import DEMO_MODELS, DemoModel, build_demo_hub, default_demo_hub_dir, demo_input
from agent.hub.local import LocalHub
from agent.llm.client import LLMClient
from agent.llm.endpoint import make_chat_model
from agent.llm.local_server import open_endpoint
from agent.pipeline.runner import CODEGEN_TIMEOUT_S
from agent.scripts import codegen
from agent.store.runstore import RunStore, write_json
from agent.task import TaskSpec
from sandbox.base import Limits
from sandbox.local import LocalSandbox

KINDS = {
    "standard": ModelKind.SEQUENCE_CLASSIFICATION,
    "multi-label": ModelKind.MULTI_LABEL,
    "embedding-head": ModelKind.EMBEDDING_HEAD,
}
DESCRIPTIONS = {"sentiment": "sentiment of tweets", "toxicity": "toxic comments"}


def demo_models(kinds: list[str], rows: int | None) -> dict[str, list[CommitteeMember]]:
    """Per kind: one demo-catalog model of it (the first) and, after it, its task's models of
    the templates' kind, its peers, whose accepted probe votes a script for a model no
    template runs is checked against. Built on first use (the quick start's catalog, unless
    `rows` caps the training)."""
    specs = {name: next(s for s in DEMO_MODELS if s.kind == KINDS[name]) for name in kinds}
    peers = {
        name: [
            s
            for s in DEMO_MODELS
            if s.task == spec.task and s.kind == ModelKind.SEQUENCE_CLASSIFICATION and s != spec
        ]
        for name, spec in specs.items()
    }
    wanted = sorted({s.id for name, spec in specs.items() for s in [spec, *peers[name]]})
    dest = (
        default_demo_hub_dir()
        if rows is None
        else Path(platformdirs.user_cache_dir("autoannotator")) / "bench-codegen-hub"
    )
    hub = LocalHub(build_demo_hub(dest, models=None if rows is None else wanted, rows=rows))

    def member(spec: DemoModel) -> CommitteeMember:
        info = hub.model_info(spec.id)
        record = {"kind": info.kind, "task": spec.task}
        return CommitteeMember(spec.id, spec.id.replace("/", "__"), info.source, info.labels,
                               record=record)  # fmt: skip

    return {name: [member(s) for s in [spec, *peers[name]]] for name, spec in specs.items()}


def prepare_run(root: Path, models: list[CommitteeMember], rows: int) -> tuple[RunStore, TaskSpec]:
    """A run of the first model's task on its demo file's first rows, every model deployed
    whole, and the peers' (all but the first) template probes accepted."""
    task_name = models[0].record["task"]
    data = demo_input(task_name)
    task = TaskSpec(
        description=DESCRIPTIONS[task_name], labels=models[0].labels, data_path=str(data)
    )
    texts = pd.read_csv(data, keep_default_na=False)["text"].head(rows)
    frame = pd.DataFrame({"row": range(len(texts)), "id": texts.index.astype(str), "text": texts})
    store = RunStore.create(root, task, frame)
    write_json({"models": [m.to_dict() for m in models]}, store.models_path)
    for model in models:
        # As a run's deploy leaves it: the files the scripts need, not the card.
        shutil.copytree(
            model.source, store.model_dir(model.slug, 0), ignore=shutil.ignore_patterns("README.md")
        )
    for peer in models[1:]:
        codegen.VERIFIERS["annotate"](
            store, task, [peer], LocalSandbox(), "cpu", Limits(timeout_s=600, threads=1)
        ).template(peer)
    return store, task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3, help="generations per role and kind")
    parser.add_argument("--roles", default="deploy,annotate,finetune")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--rows", type=int, default=None, help="cap the demo models' training")
    parser.add_argument("--attempts", type=int, default=codegen.MAX_ATTEMPTS)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--gguf", default=None)
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=2, help="LLM server threads (local)")
    parser.add_argument("--out", type=Path, default=Path("codegen_pass_rate.json"))
    args = parser.parse_args()

    kinds = args.kinds.split(",")
    models = demo_models(kinds, args.rows)
    pairs = [
        (role, kind)
        for role in args.roles.split(",")
        for kind in kinds
        if role != "finetune" or KINDS[kind] == ModelKind.SEQUENCE_CLASSIFICATION
    ]
    results = []
    with ExitStack() as stack:
        endpoint = stack.enter_context(
            open_endpoint(args.base_url, args.api_key, args.model, args.gguf, args.threads)
        )
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="codegen-bench-")))
        for role, kind in pairs:
            model = models[kind][0]
            for sample in range(args.n):
                store, task = prepare_run(
                    work / f"{role}-{kind}-{sample}", models[kind], codegen.ANNOTATE_PROBE_ROWS
                )
                chat_model = make_chat_model(
                    endpoint, timeout_s=CODEGEN_TIMEOUT_S, max_retries=0
                ).bind(temperature=args.temperature, seed=sample)
                llm = LLMClient(
                    chat_model,
                    model=endpoint.model,
                    cache_path=store.root / "llm_cache.sqlite",
                    ledger_path=store.root / "ledger.jsonl",
                )
                probe = codegen.VERIFIERS[role](
                    store, task, [model], LocalSandbox(), "cpu", Limits(timeout_s=600, threads=1)
                )
                try:
                    probe.template(model)
                    template = "passed"
                except Rejected as rejected:
                    template = f"{rejected.stage}: {rejected.reason}"[:300]
                workdir = store.scripts_dir / role / model.slug
                request = codegen.model_request(store, task, role, model, {"scripts": []}, workdir)
                started = time.perf_counter()
                _, record = codegen.generate_role(
                    store, task, role, [model], llm, probe, args.attempts,
                    workdir=workdir, request=request,
                )  # fmt: skip
                record.update(
                    role=role,
                    kind=kind,
                    model=model.id,
                    sample=sample,
                    template=template,
                    seconds=time.perf_counter() - started,
                )
                verdicts = sorted(workdir.glob("attempt-*.verdict.json"))
                record["verdicts"] = [json.loads(v.read_text()) for v in verdicts]
                results.append(record)
                print(json.dumps(record), flush=True)
                args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(
        f"\n{'role':<9} {'kind':<15} {'n':>2} {'first try':>9} "
        f"{'<= ' + str(args.attempts) + ' tries':>10} {'median min':>10}"
    )
    for role, kind in pairs:
        mine = [r for r in results if r["role"] == role and r["kind"] == kind]
        first = sum(r["status"] == "passed-first-try" for r in mine)
        passed = sum(r["origin"] == "llm" for r in mine)
        median = statistics.median(r["seconds"] for r in mine) / 60 if mine else float("nan")
        print(f"{role:<9} {kind:<15} {len(mine):>2} {first:>9} {passed:>10} {median:>10.1f}")


if __name__ == "__main__":
    main()
