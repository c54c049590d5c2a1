import ast
import importlib.util
import json
import os
import shutil

import pandas as pd
import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from pydantic import Field

from agent.domain import CodegenPlanned, CommitteeMember
from agent.errors import ScriptUnavailable, StepFailed
from agent.llm.client import LLMClient
from agent.llm.pricing import approx_tokens
from agent.prompting import load_prompt, render_template
from agent.scripts import scriptcache, verify
from agent.scripts.codegen import (
    ANNOTATE_PROBE_ROWS,
    RESAMPLE_TEMPERATURE,
    ROLES,
    VERIFIERS,
    extract_code,
    generate_scripts,
    model_request,
    probe_rows,
    prompt_messages,
    render,
    write_scripts,
)
from agent.scripts.contract import validate_votes
from agent.scripts.reference import model_section
from agent.store.runstore import RunStore, read_json
from agent.task import TaskSpec
from sandbox.base import Limits, Result
from sandbox.local import LocalSandbox
from tests.fixtures.models import (
    KEYWORD_EMBEDDING_ANNOTATE,
    KEYWORD_EMBEDDING_SECTION,
    make_keyword_embedding_model,
    make_tiny_classifier,
)
from tests.fixtures.reviewers import KeywordLabeler
from tests.fixtures.runs import KEYWORD_LABELS, KEYWORD_TEXTS, KEYWORDS, keyword_run
from tests.fixtures.runs import keyword_model as make_keyword_model

TASK = TaskSpec(
    description='sentiment """quoted"""',
    labels=["neg", "pos"],
    data_path="x.csv",
    batch_size=7,
    max_length=33,
    finetune_epochs=2,
)
LABELS = ["negative", "neutral", "positive"]
TABLE_A_OPENING = "Now I need you to help me write a code. Note that you"


@pytest.mark.parametrize("role", ROLES)
def test_templates_render_to_python_with_the_task_defaults(role):
    code = render(role, "org/model", TASK)
    tree = ast.parse(code)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
    assert "org/model" in code
    if role == "annotate":
        assert "default=7" in code and "default=33" in code
        assert "inference_mode" in code and "quantize_dynamic" in code and "bfloat16" in code
    if role == "finetune":
        assert "default=2e-05" in code and "default=0.01" in code and "default=2)" in code


def member(model_id: str) -> CommitteeMember:
    return CommitteeMember(model_id, model_id.replace("/", "__"), source=model_id, labels=[])


def test_write_scripts_is_idempotent_and_recorded(tmp_path):
    store = RunStore(tmp_path)
    models = [member("org/a"), member("org/b")]
    manifest = write_scripts(store, TASK, models)
    assert len(manifest["scripts"]) == 6
    assert {s["origin"] for s in manifest["scripts"]} == {"template"}
    # Every entry names its model's kind: `scripts show --diff` renders the template for it.
    assert {s["kind"] for s in manifest["scripts"]} == {"sequence-classification"}
    script = tmp_path / "scripts" / "annotate" / "org__a.py"
    script.write_text("# edited\n")
    write_scripts(store, TASK, models)
    assert script.read_text() == "# edited\n"
    saved = json.loads((tmp_path / "scripts" / "manifest.json").read_text())
    assert len(saved["scripts"]) == 6


def test_vote_contract_checks(tmp_path):
    chunk = pd.DataFrame({"id": ["1", "2"], "text": ["a", "b"]})
    good = tmp_path / "good.parquet"
    pd.DataFrame({"id": ["2", "1"], "label": ["pos", "neg"], "score": [0.9, 0.6]}).to_parquet(good)
    assert len(validate_votes(good, chunk, ["neg", "pos"])) == 2
    cases = {
        "missing_row": pd.DataFrame({"id": ["1"], "label": ["pos"], "score": [0.9]}),
        "bad_label": pd.DataFrame({"id": ["1", "2"], "label": ["pos", "meh"], "score": [0.9, 0.5]}),
        "bad_score": pd.DataFrame({"id": ["1", "2"], "label": ["pos", "neg"], "score": [1.5, 0.5]}),
        "columns": pd.DataFrame({"id": ["1", "2"], "prediction": ["pos", "neg"]}),
    }
    for name, frame in cases.items():
        path = tmp_path / f"{name}.parquet"
        frame.to_parquet(path)
        with pytest.raises(StepFailed, match="breaks the contract"):
            validate_votes(path, chunk, ["neg", "pos"])


def test_the_optional_probability_per_label_is_checked_and_other_columns_dropped(tmp_path):
    chunk = pd.DataFrame({"id": ["1", "2"], "text": ["a", "b"]})
    base = {"id": ["1", "2"], "label": ["pos", "neg"], "score": [0.9, 0.6]}
    good = tmp_path / "good.parquet"
    probs = [{"neg": 0.1, "pos": 0.9}, {"neg": 0.6, "pos": 0.4}]
    pd.DataFrame({**base, "probs": probs, "extra": [1, 2]}).to_parquet(good)
    kept = validate_votes(good, chunk, ["neg", "pos"])
    assert list(kept.columns) == ["id", "label", "score", "probs"]
    assert kept["probs"].tolist() == probs
    bad = {
        "a list, not a map": [[0.1, 0.9], [0.6, 0.4]],
        "other labels": [{"neg": 0.1, "yes": 0.9}, {"neg": 0.6, "yes": 0.4}],
        "out of range": [{"neg": -0.1, "pos": 1.1}, {"neg": 0.6, "pos": 0.4}],
        "missing": [{"neg": 0.1, "pos": None}, {"neg": 0.6, "pos": 0.4}],
    }
    for name, column in bad.items():
        path = tmp_path / f"{name}.parquet"
        pd.DataFrame({**base, "probs": column}).to_parquet(path)
        with pytest.raises(StepFailed, match="probs"):
            validate_votes(path, chunk, ["neg", "pos"])


# --- the pieces of the verifier ---------------------------------------------------------------


def test_code_is_taken_from_the_longest_fence_a_cut_off_fence_or_the_bare_answer():
    fenced = "Here:\n```python\nimport os\nprint(1)\n```\nand ```py\nx=1\n```"
    assert extract_code(fenced) == "import os\nprint(1)\n"
    assert extract_code("```python\nimport sys\nsys.exit(0)") == "import sys\nsys.exit(0)\n"
    assert extract_code("import sys\n") == "import sys\n"


@pytest.mark.parametrize(
    ("role", "code", "found"),
    [
        ("annotate", "import socket\n", "imports socket"),
        ("finetune", "from subprocess import run\n", "imports subprocess"),
        ("annotate", "import os\nos.system('ls')\n", "uses os.system"),
        ("annotate", "from os import system\n", "imports os.system"),
        ("annotate", "import urllib.request\n", "imports urllib.request"),
        ("finetune", "import requests\n", "imports requests"),
        ("annotate", "x = eval('1')\n", "uses eval"),
        ("deploy", "import os\nos.execv('/bin/sh', [])\n", "uses os.execv"),
        ("deploy", "import socket\n", "imports socket"),
        ("annotate", "def f(:\n", "not valid Python"),
    ],
)
def test_static_check_rejects_what_a_role_may_not_use(role, code, found):
    with pytest.raises(verify.Rejected, match=found) as caught:
        verify.static_check(code, role)
    assert caught.value.stage == "static"


def test_static_check_lets_deploy_fetch_and_passes_the_templates():
    verify.static_check("from huggingface_hub import snapshot_download\n", "deploy")
    for role in ROLES:
        verify.static_check(render(role, "org/m", TASK), role)


def test_canary_and_speed_and_finetune_metrics(tmp_path):
    rows = pd.DataFrame({"id": ["1", "2"], "text": ["good", "bad"]})
    reference = tmp_path / "ref.parquet"
    pd.DataFrame({"id": ["1", "2"], "label": ["pos", "neg"], "score": [0.9, 0.8]}).to_parquet(
        reference
    )
    swapped = tmp_path / "swapped.parquet"
    pd.DataFrame({"id": ["2", "1"], "label": ["pos", "neg"], "score": [0.9, 0.8]}).to_parquet(
        swapped
    )
    expected = pd.read_parquet(reference).set_index("id")["label"]
    with pytest.raises(verify.Rejected, match="2 of 2 labels differ") as caught:
        verify.check_votes(swapped, rows, ["neg", "pos"], expected)
    assert caught.value.stage == "canary"
    verify.check_votes(reference, rows, ["neg", "pos"], expected)

    with pytest.raises(verify.Rejected, match=r"6.0x the template's") as caught:
        verify.check_speed(Result(0, "", "", 30.0), Result(0, "", "", 5.0))
    assert caught.value.stage == "speed"
    verify.check_speed(Result(0, "", "", 24.0), Result(0, "", "", 5.0))

    metrics = tmp_path / "metrics.json"
    part = {"accuracy": 0.5, "loss": 0.7, "rows": 4}
    metrics.write_text(json.dumps({"before": part, "after": part, "train_seconds": 1.0}))
    assert verify.check_finetune_metrics(metrics, 4)["after"] == part
    metrics.write_text(json.dumps({"before": part, "after": {**part, "accuracy": 2}}))
    with pytest.raises(verify.Rejected, match=r"after.accuracy is 2.*train_seconds"):
        verify.check_finetune_metrics(metrics, 4)


@pytest.mark.parametrize("role", ["deploy", "annotate", "finetune", "select"])
def test_table_a_prompts_stay_recognisable_and_render_with_their_documented_variables(role):
    templates = load_prompt(role)
    if role == "select":
        user = templates["user"].render(
            task_description="sentiment", labels=["a", "b"], k=3, output_path="models.csv"
        )
        assert "Quantity requirements: 3 models" in user
    else:
        _, user = prompt_messages(role, TASK, [member("org/a"), member("org/b")])
        user = user.content
        assert "org/a, org/b" in user
        repair = templates["repair"].render(reason="run: boom", stderr="Traceback")
        assert "run: boom" in repair and "Traceback" in repair
    assert user.startswith(TABLE_A_OPENING)


# --- the loop, with a fake LLM and a real LocalSandbox ------------------------------------------


class SpySandbox(LocalSandbox):
    """A LocalSandbox that remembers every script it was asked to run."""

    def __init__(self):
        super().__init__()
        self.scripts = []

    def run(self, script, args, **kw):
        self.scripts.append(script.name)
        return super().run(script, args, **kw)


@pytest.fixture(scope="module")
def keyword_model(tmp_path_factory):
    return make_keyword_model(tmp_path_factory.mktemp("hub") / "kw")


@pytest.fixture
def run(tmp_path, keyword_model):
    """A run with one chunk of texts and one model already deployed as v0."""
    return keyword_run(tmp_path, keyword_model, "org__kw")


def test_a_saved_model_without_its_tokenizer_or_labels_is_rejected(keyword_model, tmp_path):
    from transformers import AutoModelForSequenceClassification

    texts = ["good day", "the news"]
    verify.check_model_dir(keyword_model, LABELS, keyword_model, texts)
    bare = tmp_path / "bare"
    AutoModelForSequenceClassification.from_pretrained(keyword_model).save_pretrained(bare)
    with pytest.raises(verify.Rejected, match="no tokenizer files"):
        verify.check_model_dir(bare, LABELS)
    with pytest.raises(verify.Rejected, match="labels are") as caught:
        verify.check_model_dir(keyword_model, ["neg", "neu", "pos"])
    assert caught.value.stage == "canary"


def fake_llm(tmp_path, answers):
    return LLMClient(
        FakeListChatModel(responses=answers),
        model="fake",
        cache_path=tmp_path / "cache.sqlite",
        ledger_path=tmp_path / "ledger.jsonl",
    )


class RecordingChat(FakeListChatModel):
    """FakeListChatModel that keeps each request's options (max_tokens, temperature)."""

    options: list[dict] = Field(default_factory=list)

    def _call(self, messages, stop=None, run_manager=None, **kwargs):
        self.options.append(kwargs)
        return super()._call(messages, stop, run_manager, **kwargs)


def fenced(code):
    return f"Here is the script:\n```python\n{code}```\n"


def generate(store, task, models, roles, llm, sandbox=None, attempts=3):
    return generate_scripts(
        store,
        task,
        models,
        roles,
        llm,
        sandbox or LocalSandbox(),
        device="cpu",
        limits=Limits(timeout_s=300, threads=1),
        max_attempts=attempts,
    )


def statuses(manifest):
    return {e["role"]: (e["origin"], e["status"]) for e in manifest["scripts"]}


def test_scripts_that_keep_the_contract_pass_first_try_and_everything_is_kept(run, tmp_path):
    store, task, models = run
    # The LLM answers with the templates in its own words (a comment). Annotate's passing path
    # is the repair test's second attempt.
    roles = ["deploy", "finetune"]
    answers = [fenced(f"# written by the LLM\n{render(r, 'org/kw', task)}") for r in roles]
    llm = fake_llm(tmp_path, answers)
    manifest = generate(store, task, models, roles, llm)

    assert statuses(manifest) == {r: ("llm", "passed-first-try") for r in roles}
    for role in roles:
        code = (store.scripts_dir / role / "org__kw.py").read_text()
        assert code.startswith("# written by the LLM")
        for suffix in ("prompt.md", "response.md", "py", "verdict.json", "result.json"):
            assert (store.scripts_dir / role / f"attempt-1.{suffix}").is_file()
        verdict = read_json(store.scripts_dir / role / "attempt-1.verdict.json")
        assert verdict["ok"] and verdict["stage"] == "passed"
        assert not (store.scripts_dir / role / "attempt-1.out").exists()  # scratch weights gone
    metrics = read_json(store.scripts_dir / "finetune" / "attempt-1.metrics.json")
    assert metrics["after"]["rows"] == 3
    ledger = [json.loads(line) for line in llm.ledger.path.read_text().splitlines()]
    assert [e["purpose"] for e in ledger] == [f"codegen-{r}" for r in roles]
    # Done roles are not redone: no further LLM call, the manifest unchanged.
    assert generate(store, task, models, roles, fake_llm(tmp_path, [])) == manifest


def test_a_broken_script_is_repaired_with_its_error_fed_back(run, tmp_path):
    store, task, models = run
    good = render("annotate", "org/kw", task)
    # A submodule of an allowed package: it passes the static check and fails when it runs.
    broken = "import pandas.pandas_typo_module\n" + good
    llm = fake_llm(tmp_path, [fenced(broken), fenced(good)])
    manifest = generate(store, task, models, ["annotate"], llm)

    assert statuses(manifest) == {"annotate": ("llm", "repaired-after-1")}
    role_dir = store.scripts_dir / "annotate"
    first = read_json(role_dir / "attempt-1.verdict.json")
    assert first["stage"] == "run" and "pandas_typo_module" in first["reason"]
    assert "ModuleNotFoundError" in (role_dir / "attempt-1.stderr.txt").read_text()
    repair = (role_dir / "attempt-2.prompt.md").read_text()
    assert "pandas_typo_module" in repair and "## ai" in repair
    assert (role_dir / "org__kw.py").read_text() == good
    votes = pd.read_parquet(role_dir / "probe" / "attempt-2.org__kw.parquet")
    assert votes.set_index("id").loc[["0", "1", "2"], "label"].tolist() == [
        "positive",
        "negative",
        "neutral",
    ]


def test_garbage_forever_falls_back_to_the_template_without_running_anything(run, tmp_path):
    store, task, models = run
    sandbox = SpySandbox()
    llm = fake_llm(tmp_path, ["I am sorry, I cannot write that.", "Sure! Step 1: think."])
    manifest = generate(store, task, models, ["annotate"], llm, sandbox)

    origin, status = statuses(manifest)["annotate"]
    assert origin == "template"
    assert status.startswith("template-fallback: 3 attempt(s) rejected, last at static")
    assert (store.scripts_dir / "annotate" / "org__kw.py").read_text() == render(
        "annotate", "org/kw", task
    )
    assert sandbox.scripts == []
    assert len(llm.ledger.path.read_text().splitlines()) == 3


def test_a_prompt_past_the_llms_context_falls_back_to_the_template(run, tmp_path):
    store, task, models = run
    sandbox = SpySandbox()
    # Every codegen prompt is far longer than this context window.
    refusing = KeywordLabeler(keywords={}, context_chars=500)
    llm = LLMClient(refusing, "fake", tmp_path / "cache.sqlite", tmp_path / "ledger.jsonl")
    manifest = generate(store, task, models, ["annotate"], llm, sandbox)

    origin, status = statuses(manifest)["annotate"]
    assert origin == "template" and "context window" in status
    assert (store.scripts_dir / "annotate" / "org__kw.py").read_text() == render(
        "annotate", "org/kw", task
    )
    assert sandbox.scripts == []


def test_a_repair_that_repeats_the_rejected_script_is_asked_again_hotter_never_rerun(run, tmp_path):
    store, task, models = run
    sandbox = SpySandbox()
    broken = "import pandas.pandas_typo_module\n" + render("annotate", "org/kw", task)
    chat = RecordingChat(responses=[fenced(broken)])  # the same answer to every request
    llm = LLMClient(chat, "fake", tmp_path / "cache.sqlite", tmp_path / "ledger.jsonl")
    manifest = generate(store, task, models, ["annotate"], llm, sandbox)

    origin, status = statuses(manifest)["annotate"]
    assert origin == "template"
    assert status.startswith("template-fallback: 3 attempt(s) rejected, last at run:")
    assert "the same script as attempt 1; not run again" in status
    assert sandbox.scripts.count("attempt-1.py") == 1
    assert "attempt-2.py" not in sandbox.scripts and "attempt-3.py" not in sandbox.scripts
    workdir = store.scripts_dir / "annotate"
    # The repeat is asked for again with the same request, sampled hotter; then it stops.
    assert (workdir / "attempt-3.prompt.md").read_text() == (
        workdir / "attempt-2.prompt.md"
    ).read_text()
    assert [kw.get("temperature") for kw in chat.options] == [None, None, RESAMPLE_TEMPERATURE]
    assert len(llm.ledger.path.read_text().splitlines()) == 3


def test_a_script_that_opens_a_socket_never_reaches_the_sandbox(run, tmp_path):
    store, task, models = run
    sandbox = SpySandbox()
    sneaky = "import socket\n" + render("annotate", "org/kw", task)
    manifest = generate(store, task, models, ["annotate"], fake_llm(tmp_path, [fenced(sneaky)]),
                        sandbox, attempts=1)  # fmt: skip

    assert "imports socket" in statuses(manifest)["annotate"][1]
    assert sandbox.scripts == []
    assert read_json(store.scripts_dir / "annotate" / "attempt-1.verdict.json")["stage"] == "static"


def test_without_an_llm_the_templates_are_used_and_the_reason_recorded(run):
    store, task, models = run
    manifest = generate(store, task, models, ROLES, None)
    assert set(statuses(manifest).values()) == {
        ("template", "template-fallback: no LLM configured")
    }


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None and os.environ.get("CI") != "true",
    reason="the local LLM (llama-cpp-python) is not installed",
)
def test_the_local_llm_writes_an_annotate_script_that_is_verified(run):
    from agent.llm.client import LLMClient as Client
    from agent.llm.endpoint import make_chat_model
    from agent.llm.local_server import open_endpoint

    store, task, models = run
    with open_endpoint() as endpoint, Client.for_endpoint(endpoint, store.root) as llm:
        llm.chat_model = make_chat_model(endpoint, timeout_s=1800, max_retries=0)
        manifest = generate(store, task, models, ["annotate"], llm)
    entry = manifest["scripts"][0]
    # Whatever the small model wrote, the outcome is one of the three and the pipeline's script
    # keeps the contract: the LLM's if it passed, else the template.
    assert entry["status"] == "passed-first-try" or entry["status"].startswith(
        ("repaired-after-", "template-fallback: ")
    )
    assert (entry["origin"] == "llm") == (not entry["status"].startswith("template"))
    assert (store.scripts_dir / "annotate" / "attempt-1.response.md").is_file()


# --- --codegen auto: the template first, the LLM only for a model it cannot run ---------------


def auto(store, task, models, roles, llm, sandbox=None, script_cache=None, progress=None):
    return generate_scripts(
        store,
        task,
        models,
        roles,
        llm,
        sandbox or LocalSandbox(),
        device="cpu",
        limits=Limits(timeout_s=300, threads=1),
        mode="auto",
        script_cache=script_cache,
        progress=progress or (lambda event: None),
    )


def ledger_purposes(llm) -> list[str]:
    path = llm.ledger.path
    lines = path.read_text().splitlines() if path.is_file() else []
    return [json.loads(line)["purpose"] for line in lines]


def test_auto_makes_no_llm_call_and_writes_no_llm_script_when_every_template_passes(run, tmp_path):
    store, task, models = run
    llm = fake_llm(tmp_path, [])  # a call would find no answer and fail
    manifest = auto(store, task, models, ROLES, llm)

    assert statuses(manifest) == {role: ("template", "template-verified") for role in ROLES}
    assert ledger_purposes(llm) == []
    assert not list(store.scripts_dir.rglob("attempt-*"))
    for role in ROLES:
        assert (store.scripts_dir / role / "org__kw.py").read_text() == render(role, "org/kw", task)
    # The templates really ran on the probe: the annotate canary's reference run is on record.
    assert (store.scripts_dir / "annotate" / "probe" / "reference-org__kw.result.json").is_file()


@pytest.fixture(scope="module")
def embedding_model(tmp_path_factory):
    return make_keyword_embedding_model(
        tmp_path_factory.mktemp("hub") / "emb", KEYWORD_LABELS, KEYWORDS, "neutral"
    )


def test_auto_asks_the_llm_for_exactly_the_model_whose_template_fails(
    run, embedding_model, tmp_path
):
    store, task, models = run
    emb = CommitteeMember(
        "org/emb", "org__emb", str(embedding_model), KEYWORD_LABELS,
        record={"kind": "embedding-head"},
    )  # fmt: skip
    committee = [*models, emb]
    deploy_llm = fake_llm(tmp_path / "d", [])
    manifest = auto(store, task, committee, ["deploy"], deploy_llm)
    shutil.copytree(embedding_model, store.model_dir("org__emb", 0))  # what the deploy does
    annotate_llm = fake_llm(tmp_path / "a", [fenced(KEYWORD_EMBEDDING_SECTION)])
    manifest = auto(store, task, committee, ["annotate", "finetune"], annotate_llm)

    # Fetching its files is the same for every kind: the template copies them whole.
    assert ledger_purposes(deploy_llm) == []
    assert ledger_purposes(annotate_llm) == ["codegen-annotate"]
    by_model = {(e["role"], e["slug"]): e for e in manifest["scripts"]}
    assert by_model[("deploy", "org__emb")]["template"] == "templates/deploy_whole.py.j2"
    assert {key: (e["origin"], e["status"]) for key, e in by_model.items()} == {
        ("deploy", "org__kw"): ("template", "template-verified"),
        ("deploy", "org__emb"): ("template", "template-verified"),
        ("annotate", "org__kw"): ("template", "template-verified"),
        ("annotate", "org__emb"): ("llm", "passed-first-try"),
        # The host scores the fine-tuning gate as a transformers classifier: only kw trains.
        ("finetune", "org__kw"): ("template", "template-verified"),
    }
    annotate_why = by_model[("annotate", "org__emb")]["why"]
    # The template puts a fresh classifier head on its bare encoder.
    assert "newly initialized" in annotate_why and "embedding-head" in annotate_why
    # The request named only the model the template failed on.
    prompt = (store.scripts_dir / "annotate" / "org__emb" / "attempt-1.prompt.md").read_text()
    assert "org/emb" in prompt and "org/kw" not in prompt
    # The answer was the model section; the verified harness is the rest of the script.
    script = (store.scripts_dir / "annotate" / "org__emb.py").read_text()
    assert model_section(script) == KEYWORD_EMBEDDING_SECTION.strip("\n")
    assert script.startswith('"""Annotate a chunk of texts with org/emb')
    votes = pd.read_parquet(store.scripts_dir / "annotate" / "probe" / "attempt-1.org__emb.parquet")
    assert votes.set_index("id").loc[["0", "1", "2"], "label"].tolist() == [
        "positive",
        "negative",
        "neutral",
    ]


def emb_member(embedding_model, slug="org__emb"):
    return CommitteeMember(
        f"org/{slug.split('__')[1]}", slug, str(embedding_model), KEYWORD_LABELS,
        record={"kind": "embedding-head"},
    )  # fmt: skip


def test_a_script_the_llm_wrote_serves_the_next_run_on_a_model_of_its_kind(
    run, embedding_model, keyword_model, tmp_path
):
    """Written once per kind: the first run pays the LLM and files what passed; a later run,
    with no LLM at all, probes the cached scripts on its own rows and runs them."""
    cache = tmp_path / "script-cache"
    store, task, models = run
    first = [*models, emb_member(embedding_model)]
    events = []
    shutil.copytree(embedding_model, store.model_dir("org__emb", 0))
    annotate_llm = fake_llm(tmp_path / "a", [fenced(KEYWORD_EMBEDDING_SECTION)])
    auto(store, task, first, ["annotate"], annotate_llm, script_cache=cache, progress=events.append)
    # Before writing, the run said what and why (the template's failure) and how big.
    plans = [e for e in events if isinstance(e, CodegenPlanned)]
    assert [(p.role, p.models) for p in plans] == [("annotate", ["org/emb"])]
    # The annotate answer is a model section: its size is the example section's.
    assert "the template failed its probe" in plans[0].why
    assert plans[0].expected_tokens == approx_tokens(render_template("annotate_section").strip())
    kept = scriptcache.cached_scripts(cache, "annotate", "embedding-head")
    assert [(k.run, k.model) for k in kept] == [(store.run_id, "org/emb")]

    # Another run, another model of the same kind, no LLM: the cache serves both roles.
    later, later_task, later_models = keyword_run(tmp_path / "later", keyword_model)
    other = emb_member(embedding_model, "org__other")
    second = [*later_models, other]
    shutil.copytree(embedding_model, later.model_dir("org__other", 0))
    manifest = auto(later, later_task, second, ["annotate"], None, script_cache=cache)
    entry = next(e for e in manifest["scripts"] if e["slug"] == "org__other")
    assert (entry["origin"], entry["status"]) == ("cache", "cache-verified")
    assert (entry["from_run"], entry["written_for"]) == (store.run_id, "org/emb")
    code = store.script_path("annotate", "org__emb").read_text()
    assert later.script_path("annotate", "org__other").read_text() == code
    # It was probed on this run's rows, not trusted: its votes on the probe are on record.
    votes = pd.read_parquet(later.scripts_dir / "annotate" / "probe" / "cache-1.org__other.parquet")
    assert votes.set_index("id").loc[["0", "1", "2"], "label"].tolist() == [
        "positive", "negative", "neutral",
    ]  # fmt: skip
    assert not list(later.scripts_dir.rglob("attempt-*"))


def test_a_cached_script_that_fails_this_runs_probe_is_passed_over(
    run, embedding_model, tmp_path, monkeypatch
):
    cache = tmp_path / "script-cache"
    store, task, models = run
    emb = emb_member(embedding_model)
    shutil.copytree(embedding_model, store.model_dir("org__emb", 0))
    # The good script is older; a newer one that breaks the contract is tried first.
    scriptcache.keep_script(cache, "annotate", "embedding-head", KEYWORD_EMBEDDING_ANNOTATE,
                            run="old", model="org/a")  # fmt: skip
    broken = KEYWORD_EMBEDDING_ANNOTATE.replace('"label"', '"category"')
    assert broken != KEYWORD_EMBEDDING_ANNOTATE
    scriptcache.keep_script(cache, "annotate", "embedding-head", broken, run="new", model="org/b")
    assert [k.run for k in scriptcache.cached_scripts(cache, "annotate", "embedding-head")] == [
        "new", "old"
    ]  # fmt: skip
    manifest = auto(store, task, [*models, emb], ["annotate"], None, script_cache=cache)
    entry = next(e for e in manifest["scripts"] if e["slug"] == "org__emb")
    assert (entry["origin"], entry["from_run"]) == ("cache", "old")
    rejected = read_json(store.scripts_dir / "annotate" / "org__emb" / "cache-1.verdict.json")
    assert rejected["ok"] is False and rejected["run"] == "new"

    # A script filed under another contract is never offered.
    monkeypatch.setattr(scriptcache, "CONTRACT_VERSION", 999)
    assert scriptcache.cached_scripts(cache, "annotate", "embedding-head") == []


def test_a_model_of_another_kind_is_deployed_whole_and_a_classifiers_save_is_not_enough(
    run, embedding_model
):
    """What the deploy leaves is all the annotate section will find: the classifier
    template's save_pretrained drops the head beside the encoder, so the probe rejects it; the
    template for other kinds copies every file and passes."""
    store, task, _ = run
    emb = emb_member(embedding_model)
    probe = VERIFIERS["deploy"](
        store, task, [emb], LocalSandbox(), "cpu", Limits(timeout_s=300, threads=1)
    )
    script = store.scripts_dir / "deploy" / "classifier.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(render("deploy", emb.id, task), encoding="utf-8")
    with pytest.raises(verify.Rejected) as rejected:
        probe(script, "classifier")
    assert rejected.value.stage == "contract"
    assert "deployed whole" in rejected.value.reason
    assert "model_head.safetensors" in rejected.value.reason
    probe.template(emb)  # templates/deploy_whole.py.j2: raises Rejected if it left a file out
    whole = (store.scripts_dir / "deploy" / "template-org__emb.py").read_text()
    assert whole == render("deploy", emb.id, task, emb.kind) and "copytree" in whole
    # Should it fail on some model, the LLM's worked example is that template, for its kind.
    workdir = store.scripts_dir / "deploy" / emb.slug
    request = model_request(store, task, "deploy", emb, {"scripts": []}, workdir)
    text = request.messages[-1].content
    assert "the verified template (templates/deploy_whole.py.j2)" in text
    assert "runs a model of this kind" in text and "copytree" in text


def test_auto_without_an_llm_stops_on_a_model_only_an_llm_can_run(run, embedding_model):
    store, task, models = run
    emb = CommitteeMember(
        "org/emb", "org__emb", str(embedding_model), KEYWORD_LABELS,
        record={"kind": "embedding-head"},
    )  # fmt: skip
    shutil.copytree(embedding_model, store.model_dir("org__emb", 0))
    with pytest.raises(
        ScriptUnavailable, match=r"annotate for org/emb: the template failed its probe"
    ) as raised:
        auto(store, task, [*models, emb], ["annotate"], None)
    assert raised.value.model_id == "org/emb"  # the run can go on without it
    with pytest.raises(StepFailed, match="the templates cannot run org/emb"):
        write_scripts(store, task, [*models, emb])


def test_a_models_request_gives_its_folders_facts_and_a_worked_example(run, embedding_model):
    store, task, _ = run
    emb = CommitteeMember(
        "org/emb", "org__emb", str(embedding_model), KEYWORD_LABELS,
        record={"kind": "embedding-head"},
    )  # fmt: skip
    # Deployed without its card (a deploy copies what the scripts need): the hub's is quoted.
    deployed = shutil.copytree(
        embedding_model, store.model_dir("org__emb", 0), ignore=shutil.ignore_patterns("README.md")
    )
    assert not (deployed / "README.md").exists()
    workdir = store.scripts_dir / "annotate" / "org__emb"
    request = model_request(store, task, "annotate", emb, {"scripts": []}, workdir)
    text = request.messages[-1].content
    assert "org/emb" in text and "org/kw" not in text
    for fact in (
        "model_head.safetensors",
        "config_setfit.json",
        "pooler_output",
        "names no labels",
        "Kind: embedding-head",
        "negative, neutral, positive",
    ):
        assert fact in text, fact  # fmt: skip
    assert "<card>\n## How to use" in text
    # No section of its kind has passed: the request shows the section's shape (a label and
    # its score per text), not the plain classifier's section (a small model copies that).
    section = render_template("annotate_section").strip()
    assert "No section has passed for a embedding-head model yet" in text
    assert 'answers.append({"label": label, "score": score})' in text
    assert section not in text and request.example == section
    skeleton = load_prompt("annotate")["skeleton"].render()
    assert skeleton in text
    # Kept beside the attempts, the harness around what it was shown: what `scripts show
    # --diff` compares the answer with; an answer is assembled into the same harness.
    kept = (workdir / "reference.py").read_text()
    assert model_section(kept) == skeleton and kept == request.assemble(skeleton)
    assert model_section(request.assemble("SECTION_TEXT")) == "SECTION_TEXT"

    rejected = verify.Rejected("contract", "labels outside the model's: ['LABEL_0']", "Trace")
    again = request.retry("Here it is:\n```python\nBROKEN_SECTION_TEXT\n```\nDone.", rejected)
    assert [m.type for m in again] == ["system", "human"]  # a fresh request, not a dialogue
    body = again[-1].content
    assert body.startswith(text)
    # The rejected section is quoted (its code, not the prose around it), with why.
    assert "```python\nBROKEN_SECTION_TEXT\n```" in body and "Here it is" not in body
    assert "rejected at the contract stage" in body
    assert "Why: labels outside the model's" in body
    assert "The requirement it broke: predict_proba(texts), the function load_model" in body
    assert "Trace" in body

    # The section of a script that passed for another model of the same kind is the better
    # example; a passed script with no section (a whole one, from the cache) is not.
    passed = store.scripts_dir / "annotate" / "org__other.py"
    passed.parent.mkdir(parents=True, exist_ok=True)
    passed.write_text(request.assemble("# PASSED FOR OTHER"))
    whole = store.scripts_dir / "annotate" / "org__whole.py"
    whole.write_text("# A WHOLE SCRIPT\n")
    entry = {"role": "annotate", "origin": "llm", "kind": "embedding-head"}
    manifest = {"scripts": [
        {**entry, "slug": "org__whole", "model": "org/whole", "path": store.relative(whole)},
        {**entry, "slug": "org__other", "model": "org/other", "path": store.relative(passed)},
    ]}  # fmt: skip
    text = model_request(store, task, "annotate", emb, manifest, workdir).messages[-1].content
    assert "# PASSED FOR OTHER" in text and "# A WHOLE SCRIPT" not in text
    assert skeleton not in text
    assert model_section((workdir / "reference.py").read_text()) == "# PASSED FOR OTHER"
    assert "the code that passed for org/other: a section that already passed" in text


def probe_sections(store, task, model, sections):
    """`model`'s annotate verifier, and each of `sections` (name -> model section) in the
    harness as <workdir>/<name>.py; (the verifier, workdir). A name is never a stdlib module's
    (random.py would shadow it: the script's folder is first on its sys.path)."""
    workdir = store.scripts_dir / "annotate" / model.slug
    request = model_request(store, task, "annotate", model, {"scripts": []}, workdir)
    for name, section in sections.items():
        (workdir / f"{name}.py").write_text(request.assemble(section))
    limits = Limits(timeout_s=300, threads=1)
    return VERIFIERS["annotate"](store, task, [model], LocalSandbox(), "cpu", limits), workdir


def test_the_harness_runs_the_template_section_like_the_template(run):
    """The plain classifier's section in the harness labels the probe as the template does."""
    store, task, models = run
    (model,) = [m for m in models if m.slug == "org__kw"]
    sections = {"harness": render_template("annotate_section")}
    probe, workdir = probe_sections(store, task, model, sections)
    script = workdir / "harness.py"
    verify.static_check(script.read_text(), "annotate")
    probe(script, "harness")  # raises Rejected unless its labels are the template's (canary)
    votes = pd.read_parquet(store.scripts_dir / "annotate" / "probe" / "harness.org__kw.parquet")
    assert len(votes) == len(probe_rows(store, ANNOTATE_PROBE_ROWS))
    assert votes["probs"].map(lambda p: abs(sum(p.values()) - 1) < 1e-4).all()


def template_section_ending_with(ending: str) -> str:
    """The plain classifier's section with its predict_proba's answer replaced by `ending`
    (code indented as predict_proba's body, after `probs` is computed)."""
    plain = render_template("annotate_section")
    head = plain[: plain.index("        return [{id2label")]
    return head + ending + "\n    return predict_proba\n"


def test_a_section_may_answer_as_a_pipeline_does_with_a_label_and_its_score(run):
    """{"label", "score"} per text, the shape a card's code usually prints, labels the probe
    as the template does; the other labels share the rest of the probability."""
    store, task, models = run
    (model,) = [m for m in models if m.slug == "org__kw"]
    section = template_section_ending_with(
        "        top = probs.max(dim=-1)\n"
        "        names = [id2label[k] for k in top.indices.tolist()]\n"
        '        return [{"label": n, "score": s} for n, s in zip(names, top.values.tolist())]\n'
    )
    probe, workdir = probe_sections(store, task, model, {"pipeline": section})
    probe(workdir / "pipeline.py", "pipeline")  # raises Rejected unless it labels as the template
    votes = pd.read_parquet(store.scripts_dir / "annotate" / "probe" / "pipeline.org__kw.parquet")
    for label, score, probs in zip(votes["label"], votes["score"], votes["probs"], strict=True):
        assert probs[label] == pytest.approx(score)
        assert sum(probs.values()) == pytest.approx(1.0)
        assert all(p == pytest.approx((1 - score) / 2) for k, p in probs.items() if k != label)


@pytest.mark.parametrize(
    ("ending", "said"),
    [
        # Seen from the bundled 1.5B model: the card's example code printed its answers.
        (
            "        for row in probs.tolist():\n            print(row)\n",
            ("returned NoneType, not a list", "one answer per text", "do not print it"),
        ),
        (
            "        return [max(row) for row in probs.tolist()]\n",
            ("answer for a text is float", "not a dict", '"label": one of LABELS'),
        ),
        (
            '        return [{"label": "nope", "score": max(row)} for row in probs.tolist()]\n',
            ("label 'nope' is not one of LABELS",),
        ),
    ],
)
def test_a_section_that_answers_in_another_shape_is_told_what_shape_is_due(run, ending, said):
    """The harness names what predict_proba gave and what it must give, so a retry can act."""
    store, task, models = run
    (model,) = [m for m in models if m.slug == "org__kw"]
    section = template_section_ending_with(ending)
    probe, workdir = probe_sections(store, task, model, {"shaped": section})
    with pytest.raises(verify.Rejected) as rejected:
        probe(workdir / "shaped.py", "shaped")
    assert rejected.value.stage == "run"
    assert all(part in rejected.value.reason for part in said), rejected.value.reason


def test_a_section_whose_load_model_returns_no_function_is_told_to_return_predict_proba(run):
    """The older shape (load_model returns what it loaded) is named at run, not crashed on."""
    store, task, models = run
    (model,) = [m for m in models if m.slug == "org__kw"]
    plain = render_template("annotate_section")
    section = plain.replace("    return predict_proba\n", "    return tokenizer, model\n")
    assert section != plain
    probe, workdir = probe_sections(store, task, model, {"tuple": section})
    with pytest.raises(verify.Rejected) as rejected:
        probe(workdir / "tuple.py", "tuple")
    assert rejected.value.stage == "run"
    assert "load_model returned tuple, not a function" in rejected.value.reason
    assert "return predict_proba" in rejected.value.reason


@pytest.mark.parametrize("trusted", ["true", "flipped"])
def test_the_finetune_template_learns_from_each_row_by_its_weight(tmp_path, trusted):
    """The same texts labelled both ways, one side weighted 1 and the other 0: the fine-tuned
    model follows the weighted side, whichever it is."""
    model = make_tiny_classifier(tmp_path / "model", ["neg", "pos"])
    script = tmp_path / "finetune.py"
    script.write_text(render("finetune", "org/model", TASK), encoding="utf-8")
    texts = ["good movie", "great fun", "bad movie", "awful fun"] * 4
    truth = ["pos", "pos", "neg", "neg"] * 4
    flipped = ["neg" if y == "pos" else "pos" for y in truth]
    train = pd.DataFrame(
        {
            "text": texts * 2,
            "label": truth + flipped,
            # `trusted` says which side counts: the true labels, or the flipped ones.
            "weight": [float(trusted == "true")] * 16 + [float(trusted == "flipped")] * 16,
        }
    )
    train.to_parquet(tmp_path / "train.parquet", index=False)
    gate = pd.DataFrame({"text": texts[:4], "label": truth[:4]})
    gate.to_parquet(tmp_path / "eval.parquet", index=False)
    out = tmp_path / "out"
    # A high rate and many epochs: a random tiny BERT must fit 4 texts in seconds.
    args = ["--model", model, "--train", tmp_path / "train.parquet"]
    args += ["--eval", tmp_path / "eval.parquet", "--out", out]
    args += ["--lr", "0.003", "--epochs", "30", "--batch_size", "8"]
    result = LocalSandbox().run(
        script, [str(a) for a in args], inputs=[model, tmp_path], output_dir=out,
        limits=Limits(timeout_s=300, threads=1),
    )  # fmt: skip
    assert result.ok, result.stderr_tail[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    # The gate holds the true labels: fitted to the true side it is right, to the flipped wrong.
    if trusted == "true":
        assert metrics["after"]["accuracy"] == 1.0, result.stderr_tail[-3000:]
    else:
        assert metrics["after"]["accuracy"] == 0.0


RANDOM_HEAD_SECTION = """\
def load_model(args):
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=len(LABELS))
    model.eval()

    def predict_proba(texts):
        batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        probs = torch.softmax(model(**batch).logits, dim=-1).tolist()
        return [dict(zip(LABELS, row)) for row in probs]

    return predict_proba
"""


def test_a_script_whose_model_answers_with_freshly_initialized_weights_is_rejected(
    run, embedding_model
):
    """A classifier head put on the encoder-with-head model's bare encoder keeps the contract
    (a dict over the labels per text) and answers at random: transformers' word on the
    weights it had to make up rejects it, and the model's own section passes."""
    store, task, _ = run
    emb = emb_member(embedding_model)
    shutil.copytree(embedding_model, store.model_dir("org__emb", 0))
    sections = {"fresh-head": RANDOM_HEAD_SECTION, "own": KEYWORD_EMBEDDING_SECTION}
    probe, workdir = probe_sections(store, task, emb, sections)
    with pytest.raises(verify.Rejected, match="newly initialized") as rejected:
        probe(workdir / "fresh-head.py", "fresh-head")
    assert rejected.value.stage == "weights"
    probe(workdir / "own.py", "own")


def test_a_section_whose_labels_disagree_with_the_accepted_members_is_rejected(
    run, embedding_model, tmp_path
):
    """No template runs the encoder-with-head model, so no canary: the keyword member's
    accepted probe votes are its peers', and a section that reads its head in the wrong label
    order keeps the contract but not their agreement."""
    _, _, models = run
    # A probe of enough rows for kappa to tell (verify.MIN_PEER_ROWS).
    texts = KEYWORD_TEXTS * 6
    task = TaskSpec(description="sentiment of short texts", labels=KEYWORD_LABELS, data_path="x")
    rows = pd.DataFrame({"row": range(len(texts)), "id": [str(i) for i in range(len(texts))],
                         "text": texts})  # fmt: skip
    store = RunStore.create(tmp_path / "big", task, rows)
    shutil.copytree(models[0].source, store.model_dir("org__kw", 0))
    auto(store, task, models, ["annotate"], None)  # the keyword member's template is accepted
    assert (store.scripts_dir / "annotate" / "probe" / "accepted-org__kw.parquet").is_file()
    emb = emb_member(embedding_model)
    shutil.copytree(embedding_model, store.model_dir("org__emb", 0))
    rotated = KEYWORD_EMBEDDING_SECTION.replace(
        "dict(zip(labels, row))", "dict(zip(labels[1:] + labels[:1], row))"
    )
    assert rotated != KEYWORD_EMBEDDING_SECTION
    sections = {"rotated": rotated, "own": KEYWORD_EMBEDDING_SECTION}
    probe, workdir = probe_sections(store, task, emb, sections)
    with pytest.raises(verify.Rejected, match="Cohen's kappa") as rejected:
        probe(workdir / "rotated.py", "rotated")
    assert rejected.value.stage == "peers"
    probe(workdir / "own.py", "own")
    assert (store.scripts_dir / "annotate" / "probe" / "accepted-org__emb.parquet").is_file()
