"""How often the LLM writes a script that passes verification: first try, after repair, or never.

For each role, `--n` independent generations (a fresh cache each, sampled at `--temperature`
with a different seed) go through the same loop a run uses (scripts.codegen.generate_role: static
check, sandbox probe on real tweets, contract, canary, speed; repair up to `--attempts`), on a
real model of the demo catalog deployed as version 0.

    python bench/codegen_pass_rate.py [--n 10] [--roles deploy,annotate,finetune]
        [--gguf PATH | --base-url URL --api-key KEY --model NAME] [--threads 1] [--out FILE]

Prints one row per role and writes every generation's outcome and timing as JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd

from agent.domain import CommitteeMember
from agent.hub.demo import build_demo_hub
from agent.llm.client import LLMClient
from agent.llm.endpoint import make_chat_model
from agent.llm.local_server import open_endpoint
from agent.pipeline.runner import CODEGEN_TIMEOUT_S
from agent.scripts import codegen
from agent.store.runstore import RunStore, write_json
from agent.task import TaskSpec
from sandbox.base import Limits
from sandbox.local import LocalSandbox

TWEETS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tweeteval_sentiment"


def demo_model() -> CommitteeMember:
    """The first sentiment model of the demo catalog (built on first use)."""
    hub = build_demo_hub()
    manifest = json.loads((hub / "manifest.json").read_text(encoding="utf-8"))
    models = manifest["models"].items()
    model_id, entry = next((i, m) for i, m in models if m["task"] == "sentiment")
    slug = model_id.replace("/", "__")
    return CommitteeMember(id=model_id, slug=slug, source=str(hub / slug), labels=entry["labels"])


def prepare_run(root: Path, model: CommitteeMember, rows: int) -> tuple[RunStore, TaskSpec]:
    task = TaskSpec(description="sentiment of tweets", labels=model.labels, data_path=str(TWEETS))
    texts = pd.read_csv(TWEETS / "test.csv")["text"].head(rows)
    frame = pd.DataFrame({"row": range(len(texts)), "id": texts.index.astype(str), "text": texts})
    store = RunStore.create(root, task, frame)
    write_json({"models": [model.to_dict()]}, store.models_path)
    shutil.copytree(model.source, store.model_dir(model.slug, 0))
    return store, task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10, help="generations per role")
    parser.add_argument("--roles", default="deploy,annotate,finetune")
    parser.add_argument("--attempts", type=int, default=codegen.MAX_ATTEMPTS)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--gguf", default=None)
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=1, help="LLM server threads (local)")
    parser.add_argument("--out", type=Path, default=Path("codegen_pass_rate.json"))
    args = parser.parse_args()

    model = demo_model()
    results = []
    with ExitStack() as stack:
        endpoint = stack.enter_context(
            open_endpoint(args.base_url, args.api_key, args.model, args.gguf, args.threads)
        )
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="codegen-bench-")))
        for role in args.roles.split(","):
            for sample in range(args.n):
                store, task = prepare_run(work / f"{role}-{sample}", model, codegen.PROBE_ROWS)
                chat_model = make_chat_model(
                    endpoint, timeout_s=CODEGEN_TIMEOUT_S, max_retries=0
                ).bind(temperature=args.temperature, seed=sample)
                llm = LLMClient(
                    chat_model,
                    model=endpoint.model,
                    cache_path=store.root / "llm_cache.sqlite",
                    ledger_path=store.root / "ledger.jsonl",
                )
                verifier = codegen.VERIFIERS[role](
                    store, task, [model], LocalSandbox(), "cpu", Limits(timeout_s=600, threads=1)
                )
                started = time.perf_counter()
                _, record = codegen.generate_role(
                    store, task, role, [model], llm, verifier, args.attempts
                )
                record.update(role=role, sample=sample, seconds=time.perf_counter() - started)
                verdicts = sorted((store.scripts_dir / role).glob("attempt-*.verdict.json"))
                record["stages"] = [json.loads(v.read_text())["stage"] for v in verdicts]
                results.append(record)
                print(json.dumps(record), flush=True)
                args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"\n{'role':<10} {'first try':>9} {'repaired':>9} {'fallback':>9} {'median s':>9}")
    for role in args.roles.split(","):
        mine = [r for r in results if r["role"] == role]
        kinds = Counter(
            "first" if r["status"] == "passed-first-try"
            else "repaired" if r["status"].startswith("repaired") else "fallback"
            for r in mine
        )  # fmt: skip
        seconds = sorted(r["seconds"] for r in mine)
        median = seconds[len(seconds) // 2] if seconds else float("nan")
        print(
            f"{role:<10} {kinds['first']:>9} {kinds['repaired']:>9} {kinds['fallback']:>9} "
            f"{median:>9.0f}"
        )


if __name__ == "__main__":
    main()
