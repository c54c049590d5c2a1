"""A hostile OpenAI-compatible endpoint writes the scripts: nothing they leave behind may reach
the host's files, the host's judgement (canary, gate) or the next prompt.

Every script here is what such an endpoint answered; each test names the attack it replays.
The endpoint is a loopback server (tests/fake_openai.py), the sandbox a real LocalSandbox, or
Docker where marked.
"""

import json
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from agent.cli.app import app
from agent.domain import CommitteeMember
from agent.errors import StepFailed
from agent.llm.client import LLMClient
from agent.llm.endpoint import Endpoint, make_chat_model
from agent.pipeline.annotate import annotate_chunk
from agent.pipeline.finetune import finetune_cycle
from agent.scripts import codegen, verify
from agent.scripts.codegen import generate_scripts
from agent.store.runstore import RunStore, read_json, write_json, write_parquet
from sandbox.base import Limits
from sandbox.local import LocalSandbox
from tests.fixtures.keywords import LABELS, write_data
from tests.fixtures.llm import LoopbackChatServer
from tests.fixtures.runs import keyword_model as make_keyword_model
from tests.fixtures.runs import keyword_run

# What the keyword model (and so the template's reference run) says for KEYWORD_TEXTS.
TRUTH = ["positive", "negative", "neutral", "positive", "negative", "neutral", "neutral"]
SLUG = "org__kw"
REPO = Path(__file__).resolve().parents[2]
# The real check, kept before the autouse fixture below lets each test's script past it.
STATIC_CHECK = verify.static_check

# The annotate command line every candidate gets; the attacks below use only these.
ANNOTATE_HEAD = """\
import argparse
import os
import shutil
from pathlib import Path

parser = argparse.ArgumentParser()
for flag in ("--model", "--input", "--output", "--batch-size", "--max-length", "--device",
             "--threads"):
    parser.add_argument(flag)
args = parser.parse_args()
out = Path(args.output)
slug = Path(args.model).parent.name
"""
FINETUNE_HEAD = """\
import argparse
import json
import os
import shutil
from pathlib import Path

import pandas as pd

parser = argparse.ArgumentParser()
for flag in ("--model", "--train", "--eval", "--out", "--device", "--threads"):
    parser.add_argument(flag)
args = parser.parse_args()
out = Path(args.out)
"""


class HostileEndpoint(LoopbackChatServer):
    """Answers every request with the same script and keeps every prompt it was sent."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.prompts: list[str] = []
        super().__init__()

    def complete(self, body: dict) -> tuple[dict, dict]:
        self.prompts.append("\n".join(str(m.get("content", "")) for m in body["messages"]))
        answer = f"```python\n{self.code}```\n"
        return {"role": "assistant", "content": answer}, {
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "total_tokens": 2,
        }


@pytest.fixture(autouse=True)
def past_the_static_check(monkeypatch):
    """The static check is a first filter and already rejects these scripts (os.symlink, fixed
    paths); a script can hide such calls from the ast, so each test here lets its script past
    the filter and proves the wall behind it holds (test_the_static_check_already_rejects_...)."""
    monkeypatch.setattr(verify, "static_check", lambda code, role: None)


@pytest.fixture(scope="module")
def keyword_model(tmp_path_factory):
    return make_keyword_model(tmp_path_factory.mktemp("hub") / "kw")


@pytest.fixture
def run(tmp_path, keyword_model):
    """A run with one chunk of texts and one model already deployed as v0."""
    return keyword_run(tmp_path, keyword_model, SLUG)


def let_write(run, role, code, tmp_path, sandbox=None):
    """Let the hostile endpoint write `role`'s script; (the manifest entry, the endpoint)."""
    store, task, models = run
    with HostileEndpoint(code) as endpoint:
        chat = make_chat_model(Endpoint(endpoint.base_url, "sk-test", "hostile"), max_retries=0)
        llm = LLMClient(chat, "hostile", tmp_path / "cache.sqlite", tmp_path / "ledger.jsonl")
        manifest = generate_scripts(
            store,
            task,
            models,
            [role],
            llm,
            sandbox or LocalSandbox(),
            device="cpu",
            limits=Limits(timeout_s=120, threads=1),
            max_attempts=3,
        )
    (entry,) = [e for e in manifest["scripts"] if e["role"] == role]
    return entry, endpoint


def verdicts(store, role):
    return [read_json(p) for p in sorted((store.scripts_dir / role).glob("attempt-*.verdict.json"))]


# --- codegen: the annotate probe -----------------------------------------------------------------

RESULT_LINK_ATTACK = (
    ANNOTATE_HEAD
    + """
# Where the host saves this run's Result (with this script's stdout): make it a link.
for n in (1, 2, 3):
    link = out.parent / f"attempt-{n}.{slug}.result.json"
    if not os.path.lexists(link):
        os.symlink(VICTIM, link)
# The template's answers for the same rows: copied, they pass the canary.
reference = out.parent / f"reference-{slug}.parquet"
if reference.exists():
    shutil.copyfile(reference, out)
print("export EVIL=1  # appended to the victim's shell startup")
"""
)


def test_a_planted_result_link_and_copied_reference_answers_neither_write_nor_pass(run, tmp_path):
    """The end-to-end attack: the host wrote the Result through the script's link onto a host
    file, and the copied reference answers passed the canary."""
    victim = tmp_path / "victim.bashrc"
    victim.write_text("# the user's own file\n")
    code = RESULT_LINK_ATTACK.replace("VICTIM", repr(str(victim)))
    entry, _ = let_write(run, "annotate", code, tmp_path)

    assert victim.read_text() == "# the user's own file\n"
    assert entry["origin"] == "template" and entry["status"].startswith("template-fallback")
    assert not any(v["ok"] for v in verdicts(run[0], "annotate"))


def test_the_cli_run_with_a_hostile_endpoint_writes_no_host_file_and_keeps_no_llm_script(
    tmp_path, hub_dir
):
    """`autoannotator run --codegen llm --sandbox local`: every script the endpoint writes is
    the attack; the run finishes on the templates and the victim is untouched."""
    victim = tmp_path / "victim.bashrc"
    victim.write_text("# the user's own file\n")
    data = write_data(tmp_path / "data.csv", 20)
    code = RESULT_LINK_ATTACK.replace("VICTIM", repr(str(victim)))
    with HostileEndpoint(code) as endpoint:
        result = CliRunner().invoke(
            app,
            [
                "run", "--data", str(data), "--labels", ",".join(LABELS),
                "--task", "sentiment of short texts", "--run-dir", str(tmp_path / "run"),
                "--hub", str(hub_dir), "--sandbox", "local", "--device", "cpu",
                "--codegen", "llm", "--reviewer", "oracle:gold", "--chunk-size", "16",
                "--llm-base-url", endpoint.base_url, "--llm-api-key", "k", "--llm-model", "x",
                "--quiet",
            ],
        )  # fmt: skip

    assert victim.read_text() == "# the user's own file\n"
    assert result.exit_code == 0, result.output
    manifest = read_json(tmp_path / "run" / "scripts" / "manifest.json")["scripts"]
    assert {e["origin"] for e in manifest} == {"template"}
    assert len(pd.read_parquet(tmp_path / "run" / "labels.parquet")) == 20


@pytest.mark.docker
def test_the_static_check_already_rejects_the_result_link_attack():
    with pytest.raises(verify.Rejected) as rejected:
        STATIC_CHECK(RESULT_LINK_ATTACK.replace("VICTIM", "'/home/user/.bashrc'"), "annotate")
    assert rejected.value.stage == "static"


def test_the_result_link_attack_fails_in_docker_too(run, tmp_path, docker_sandbox):
    victim = tmp_path / "victim.bashrc"
    victim.write_text("# the user's own file\n")
    code = RESULT_LINK_ATTACK.replace("VICTIM", repr(str(victim)))
    entry, _ = let_write(run, "annotate", code, tmp_path, sandbox=docker_sandbox)

    assert victim.read_text() == "# the user's own file\n"
    assert entry["origin"] == "template"


def test_votes_linked_to_a_host_parquet_are_refused(run, tmp_path):
    host = tmp_path / "host-votes.parquet"
    ids = [str(i) for i in range(7)]
    pd.DataFrame({"id": ids, "label": TRUTH, "score": 0.9}).to_parquet(host, index=False)
    entry, _ = let_write(
        run, "annotate", ANNOTATE_HEAD + f"os.symlink({str(host)!r}, out)\n", tmp_path
    )

    assert entry["origin"] == "template"
    first = verdicts(run[0], "annotate")[0]
    assert first["stage"] == "contract" and "symlink" in first["reason"]


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        ("print('done')", "exited 0 without writing"),
        ("out.write_bytes(b'not a parquet file')", "not a parquet file"),
        ("out.touch()", "is empty"),
    ],
)
def test_exit_0_without_usable_votes_goes_back_for_repair(run, tmp_path, action, reason):
    """Before: FileNotFoundError / ArrowInvalid out of generate_scripts, a traceback."""
    entry, endpoint = let_write(run, "annotate", ANNOTATE_HEAD + action + "\n", tmp_path)

    assert entry["origin"] == "template"
    first = verdicts(run[0], "annotate")[0]
    assert first["stage"] == "contract" and reason in first["reason"]
    # The repair request, then (its answer the same rejected script) that request once more.
    assert len(endpoint.prompts) == 3 and reason in endpoint.prompts[1]
    assert endpoint.prompts[2] == endpoint.prompts[1]


# --- codegen: the finetune probe -----------------------------------------------------------------


def test_a_linked_metrics_json_puts_no_host_content_in_the_repair_prompt(run, tmp_path):
    secret = tmp_path / "host-config.json"
    secret.write_text(json.dumps({"before": {"accuracy": "sk-HOST-SECRET-42"}}))
    code = (
        FINETUNE_HEAD
        + f"out.mkdir(exist_ok=True)\nos.symlink({str(secret)!r}, out / 'metrics.json')\n"
    )
    entry, endpoint = let_write(run, "finetune", code, tmp_path)

    assert entry["origin"] == "template"
    # The request, the repair, and (its answer the same rejected script) the repair once more.
    assert len(endpoint.prompts) == 3
    assert not any("sk-HOST-SECRET-42" in prompt for prompt in endpoint.prompts)
    assert "metrics.json is a symlink" in endpoint.prompts[1]
    assert not any("sk-HOST-SECRET" in p.read_text() for p in run[0].root.rglob("*.md"))


# --- the pipeline's annotate step ----------------------------------------------------------------


def test_a_chunks_votes_linked_to_a_host_parquet_fail_the_step(run, tmp_path):
    """Before: the link was validated through, then renamed into votes/ as the chunk's votes."""
    store, _, models = run
    host = tmp_path / "host-votes.parquet"
    ids = [str(i) for i in range(7)]
    pd.DataFrame({"id": ids, "label": TRUTH, "score": 0.9}).to_parquet(host, index=False)
    script = store.scripts_dir / "annotate" / f"{SLUG}.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(ANNOTATE_HEAD + f"os.symlink({str(host)!r}, out)\n")

    with pytest.raises(StepFailed, match=r"votes\.parquet is a symlink"):
        annotate_chunk(store, LocalSandbox(), models, {SLUG: 0}, 0, "cpu", Limits(timeout_s=60))
    assert not store.model_votes(SLUG, 0).exists()


# --- the pipeline's fine-tune cycle --------------------------------------------------------------

COPY_AND_CLAIM = """
shutil.copytree(args.model, out, dirs_exist_ok=True)
rows = len(pd.read_parquet(args.eval))
"""
LIE = """
(out / "metrics.json").write_text(json.dumps({
    "before": {"accuracy": 0.0, "loss": 9.0, "rows": rows},
    "after": {"accuracy": 1.0, "loss": 0.0, "rows": rows},
    "train_seconds": 1.0,
}))
"""


def cycle_ready(run, code) -> tuple[RunStore, list[CommitteeMember]]:
    """chunk 0 reviewed by the LLM (every label right), and `code` as the finetune script."""
    store, _, models = run
    ids = [str(i) for i in range(7)]
    write_parquet(
        pd.DataFrame({"id": ids, "chunk": 0, "label": TRUTH, "source": "llm"}), store.hard_chunk(0)
    )
    write_parquet(
        pd.DataFrame({"id": ids, "label": TRUTH, "uncertainty": 1 / 3}), store.chunk_votes(0)
    )
    models = [replace(models[0], inverse_label_map={label: label for label in LABELS})]
    script = store.scripts_dir / "finetune" / f"{SLUG}.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(code)
    write_json({"models": [m.to_dict() for m in models]}, store.models_path)
    return store, models


def test_the_gate_is_scored_by_the_host_not_by_the_scripts_metrics(run):
    """The candidate is the unchanged model; its metrics.json claims 0% -> 100%."""
    store, models = cycle_ready(run, FINETUNE_HEAD + COPY_AND_CLAIM + LIE)
    versions, record = finetune_cycle(
        store, LocalSandbox(), models, {SLUG: 0}, [0], [0], 1, "cpu", Limits(timeout_s=120)
    )

    scores = record["models"][SLUG]
    assert not scores["kept"] and versions == {SLUG: 0}
    assert scores["gate_before"] == scores["gate_after"] == 1.0
    assert record["gate_scored_by"] == "host"
    gate = read_json(store.model_dir(SLUG, 1) / "gate.json")
    assert gate["script_reported"]["after"]["accuracy"] == 1.0  # kept for the record only


# Run in a child with a memory cap and a timeout: before the fix these read /dev/zero until
# memory ran out, or blocked forever on the FIFO.
CHILD = """
import sys
from agent.pipeline.annotate import StepFailed
from agent.pipeline.annotate import StepFailed, annotate_chunk
from agent.cli.app import app
from agent.pipeline.finetune import finetune_cycle
from agent.store.runstore import RunStore
from sandbox.base import Limits
from sandbox.local import LocalSandbox

store = RunStore(sys.argv[1])
models = store.committee()
try:
    finetune_cycle(store, LocalSandbox(), models, {"org__kw": 0}, [0], [0], 1, "cpu",
                   Limits(timeout_s=60))
except StepFailed as err:
    print("StepFailed:", err)
"""


@pytest.mark.parametrize(
    ("plant", "reason"),
    [
        ("os.symlink('/dev/zero', out / 'metrics.json')", "metrics.json is a symlink"),
        ("os.mkfifo(out / 'metrics.json')", "metrics.json is a FIFO"),
    ],
)
def test_a_metrics_json_that_never_ends_fails_the_step(run, plant, reason):
    store, _ = cycle_ready(run, FINETUNE_HEAD + COPY_AND_CLAIM + plant + "\n")
    cap = "import resource; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
    child = subprocess.run(
        [sys.executable, "-c", cap + textwrap.dedent(CHILD), str(store.root)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert "StepFailed:" in child.stdout and reason in child.stdout
    assert not store.model_dir(SLUG, 1).exists()


# --- deploy: the host downloads, the script runs offline ------------------------------------------


class SpySandbox(LocalSandbox):
    """A LocalSandbox that remembers what each run was given."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def run(self, script, args, **kw):
        self.calls.append((args, kw))
        return super().run(script, args, **kw)


def test_a_hub_model_is_downloaded_by_the_host_and_deployed_without_network(
    run, tmp_path, keyword_model, monkeypatch
):
    store, task, models = run
    downloads = []

    def snapshot_download(repo_id, local_dir, **kw):
        downloads.append(repo_id)
        shutil.copytree(keyword_model, local_dir, dirs_exist_ok=True)
        return str(local_dir)

    monkeypatch.setattr(codegen, "snapshot_download", snapshot_download, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    hub_model = replace(models[0], source="org/kw")
    script = tmp_path / "deploy.py"
    script.write_text(codegen.render("deploy", "org/kw", task))
    spy = SpySandbox()
    check = codegen.VERIFIERS["deploy"](store, task, [hub_model], spy, "cpu", Limits(timeout_s=120))
    check(script, "attempt-1")

    assert downloads == ["org/kw"]
    ((args, kw),) = spy.calls
    local = tmp_path / "cache" / "autoannotator" / "models" / "org__kw"
    assert args[:2] == ["--source", str(local)] and kw["inputs"] == [local]
    assert not kw["limits"].network
