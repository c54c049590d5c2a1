"""The static check of generated scripts is an allowlist: bypass probes are rejected, the
templates and plausible LLM-written scripts pass (issue #12).

Each probe got past the old denylist check or is one it caught and must still catch; the sandbox
is the wall either way (tests/sandbox/test_docker_security.py), this is its first filter.
"""

import importlib.resources
import re

import pytest
import yaml

from agent.scripts.codegen import ROLES, render
from agent.scripts.verify import ROLE_MODULES, Rejected, static_check
from agent.task import TaskSpec

TASK = TaskSpec(
    description="sentiment of tweets",
    labels=["negative", "positive"],
    data_path="x.csv",
    batch_size=8,
    max_length=64,
    finetune_epochs=2,
)

# (name, role, code): each must be rejected at the static stage.
PROBES = [
    # what the old check caught already
    ("import-subprocess", "annotate", "import subprocess\nsubprocess.run(['sh'])\n"),
    ("import-subprocess-as", "annotate", "import subprocess as s\ns.run(['sh'])\n"),
    ("import-socket", "deploy", "import socket\n"),
    ("os-system", "annotate", "import os\nos.system('sh')\n"),
    ("os-execv", "deploy", "import os\nos.execv('/bin/sh', ['sh'])\n"),
    ("eval", "annotate", "eval('1')\n"),
    ("exec", "finetune", "exec('x = 1')\n"),
    ("dunder-import", "annotate", "__import__('os').system('sh')\n"),
    ("urllib", "annotate", "import urllib.request\n"),
    ("ctypes", "annotate", "import ctypes\nctypes.CDLL(None).system(b'sh')\n"),
    ("importlib", "annotate", "import importlib\nimportlib.import_module('os')\n"),
    # aliases and module objects bound to other names
    ("from-os-import-system-as", "annotate", "from os import system as s\ns('sh')\n"),
    ("os-bound-to-name", "annotate", "import os\no = os\no.system('sh')\n"),
    ("os-as-alias-popen", "annotate", "import os as o\no.popen('sh')\n"),
    ("module-in-list", "finetune", "import os\n[os][0].popen('sh')\n"),
    # attribute access by a computed name
    ("getattr-concat", "annotate", "import os\ngetattr(os, 'sys' + 'tem')('sh')\n"),
    ("getattr-literal", "annotate", "import os\ngetattr(os, 'system')('sh')\n"),
    ("getattr-as-value", "annotate",
     "import functools, os\nfunctools.reduce(getattr, ['system'], os)\n"),
    # the interpreter's internals
    ("builtins-dict", "annotate", "__builtins__['exec']('x = 1')\n"),
    ("sys-modules", "annotate", "import sys\nsys.modules['subprocess'].run(['sh'])\n"),
    ("sys-getframe", "annotate", "import sys\nsys._getframe().f_globals\n"),
    ("subclasses", "annotate", "().__class__.__bases__[0].__subclasses__()\n"),
    ("dunder-in-format", "annotate", "'{0.__class__}'.format(1)\n"),
    ("generator-frame", "finetune", "g = (x for x in [])\ng.gi_frame.f_builtins['exec']('1')\n"),
    ("globals", "annotate", "globals()['x'] = 1\n"),
    ("vars", "annotate", "import os\nvars(os)['system']('sh')\n"),
    ("compile", "annotate", "code = compile('1', 'x', 'eval')\n"),
    ("string-annotation", "annotate", "def f(x: \"exec('1')\"):\n    pass\n"),
    # private C modules and loaders
    ("posixsubprocess", "annotate", "import _posixsubprocess\n"),
    ("raw-socket", "annotate", "import _socket\n"),
    ("numpy-ctypeslib", "annotate", "import numpy as np\nnp.ctypeslib.load_library('x', '.')\n"),
    ("pickle-loads", "finetune", "import pickle\npickle.loads(b'')\n"),
    ("marshal-loads", "annotate", "import marshal\nmarshal.loads(b'')\n"),
    ("runpy", "annotate", "import runpy\nrunpy.run_path('x.py')\n"),
    ("torch-load-pickle", "finetune", "import torch\ntorch.load('x.pt')\n"),
    ("trust-remote-code", "deploy",
     "from transformers import AutoModel\n"
     "AutoModel.from_pretrained('m', trust_remote_code=True)\n"),
    ("logging-config", "annotate", "import logging.config\n"),
    # links, devices and system files
    ("os-symlink", "finetune", "import os\nos.symlink('/etc/passwd', 'out/x')\n"),
    ("os-mkfifo", "finetune", "from os import mkfifo\nmkfifo('out/x')\n"),
    ("open-proc", "annotate", "open('/proc/self/environ').read()\n"),
    # modules re-exported by allowed ones, loaders behind keywords
    ("torch-reexports-os", "annotate", "import torch\ntorch.os.system('sh')\n"),
    ("os-path-reexports-sys", "annotate", "import os\nos.path.sys.modules['subprocess']\n"),
    ("torch-serialization-pickle", "finetune",
     "from torch import serialization\nserialization.pickle.loads(b'')\n"),
    ("torch-load-as-value", "finetune", "import torch\nload = torch.load\nload('x.pt')\n"),
    ("numpy-allow-pickle", "annotate", "import numpy as np\nnp.load('x.npy', allow_pickle=True)\n"),
    ("remote-code-in-kwargs", "deploy",
     "from transformers import AutoModel\n"
     "AutoModel.from_pretrained('m', **{'trust_remote_code': True})\n"),
    ("path-symlink-to", "finetune", "from pathlib import Path\nPath('out/x').symlink_to('/')\n"),
    ("sys-path-insert", "annotate", "import sys\nsys.path.insert(0, 'x')\n"),
]  # fmt: skip

CLEAN_SCRIPTS = {
    "annotate": """
import argparse
import os

import numpy as np
import pandas as pd
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    df = pd.read_parquet(args.input)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model).to(args.device)
    model.eval()
    if args.device == "cuda":
        model.half()
    texts = df["text"].tolist()
    order = np.argsort([len(t) for t in texts])
    labels, scores = [None] * len(texts), [0.0] * len(texts)
    with torch.inference_mode():
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            enc = tokenizer([texts[j] for j in idx], padding=True, truncation=True,
                            max_length=args.max_length, return_tensors="pt").to(args.device)
            probs = torch.softmax(model(**enc).logits.float(), dim=-1)
            best, best_idx = probs.max(dim=-1)
            for j, p, k in zip(idx, best.tolist(), best_idx.tolist()):
                labels[j] = model.config.id2label[k]
                scores[j] = p
    pd.DataFrame({"id": df["id"], "label": labels, "score": scores}).to_parquet(args.output)


if __name__ == "__main__":
    main()
""",
    "finetune": """
import argparse
import json
import random
import time
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def evaluate(model, tokenizer, frame, label2id, args):
    model.eval()
    correct, loss_sum = 0, 0.0
    with torch.inference_mode():
        enc = tokenizer(frame["text"].tolist(), padding=True, truncation=True,
                        max_length=args.max_length, return_tensors="pt").to(args.device)
        labels = torch.tensor([label2id[x] for x in frame["label"]], device=args.device)
        out = model(**enc, labels=labels)
        correct = (out.logits.argmax(-1) == labels).sum().item()
        loss_sum = out.loss.item()
    return {"accuracy": correct / len(frame), "loss": loss_sum, "rows": len(frame)}


def main():
    parser = argparse.ArgumentParser()
    for name in ("--model", "--train", "--eval", "--out"):
        parser.add_argument(name, required=True)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model).to(args.device)
    label2id = {name: i for i, name in model.config.id2label.items()}
    train, held_out = pd.read_parquet(args.train), pd.read_parquet(args.eval)
    before = evaluate(model, tokenizer, held_out, label2id, args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    rows = list(zip(train["text"], train["label"]))
    start = time.time()
    for _ in range(args.epochs):
        model.train()
        for batch in DataLoader(rows, batch_size=args.batch_size, shuffle=True):
            texts, names = batch
            enc = tokenizer(list(texts), padding=True, truncation=True,
                            max_length=args.max_length, return_tensors="pt").to(args.device)
            labels = torch.tensor([label2id[n] for n in names], device=args.device)
            loss = model(**enc, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    seconds = time.time() - start
    after = evaluate(model, tokenizer, held_out, label2id, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    metrics = {"before": before, "after": after, "train_rows": len(train), "train_seconds": seconds}
    with open(out / "metrics.json", "w") as fh:
        json.dump(metrics, fh)


if __name__ == "__main__":
    main()
""",
    "deploy": """
import argparse
import sys

from huggingface_hub import snapshot_download
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def main():
    parser = argparse.ArgumentParser(description="Deploy a model")
    parser.add_argument("--source", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--revision", default="main")
    args = parser.parse_args()
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.source, revision=args.revision)
        model = AutoModelForSequenceClassification.from_pretrained(
            args.source, revision=args.revision, trust_remote_code=False
        )
    except Exception as exc:
        print(f"cannot load {args.source}: {exc}", file=sys.stderr)
        sys.exit(1)
    tokenizer.save_pretrained(args.out)
    model.save_pretrained(args.out)
    print(f"{type(model).__name__} saved; hub client {snapshot_download.__name__}")


if __name__ == "__main__":
    main()
""",
}


@pytest.mark.parametrize(("role", "code"), [p[1:] for p in PROBES], ids=[p[0] for p in PROBES])
def test_static_check_rejects_the_probe(role, code):
    with pytest.raises(Rejected, match=r"line \d+") as caught:
        static_check(code, role)
    assert caught.value.stage == "static"


@pytest.mark.parametrize("role", ROLES)
def test_static_check_passes_the_rendered_template(role):
    static_check(render(role, "org/model", TASK), role)


@pytest.mark.parametrize("role", ROLES)
def test_static_check_passes_a_plausible_llm_script(role):
    static_check(CLEAN_SCRIPTS[role], role)


def test_static_check_keeps_the_network_client_to_deploy():
    static_check("from huggingface_hub import snapshot_download\n", "deploy")
    with pytest.raises(Rejected, match="line 1: imports huggingface_hub"):
        static_check("from huggingface_hub import snapshot_download\n", "annotate")


@pytest.mark.parametrize("role", ROLES)
def test_the_prompt_names_the_allowlist_the_check_applies(role):
    source = importlib.resources.files("prompts").joinpath(f"{role}.yaml").read_text("utf-8")
    listed = re.search(r"Import only these modules: ([^.]+)\.", yaml.safe_load(source)["user"])
    assert set(listed.group(1).split(", ")) == ROLE_MODULES[role] - {"__future__"}
