"""Builders shared by tests: tiny random classifiers in the Hugging Face layout.

A tiny BERT (hidden 32, 2 layers) with a WordPiece vocabulary written here loads offline with
AutoTokenizer / AutoModelForSequenceClassification in well under a second, so tests exercise
the real loading, annotate and fine-tune code paths without a downloaded model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORD_LIST = """
the a an and or but not no is are was were be been am i you he she it we they me my your
his her its our their this that these those there here to of in on at for with from by
about as into like than then so very too just also only really more most much many some
any all every each one two three good great best love like happy nice fine glad fun cool
awesome excellent amazing wonderful perfect bad worst hate sad awful terrible horrible poor
angry boring ugly stupid idiot dumb kill die dead shut up okay ok neutral maybe today
tomorrow yesterday day night time week year game movie film show song music food phone
price market stock company news people friend family team work school home city world
new old big small high low up down out over again still never always can will would should
could do does did have has had get got go going went see saw say said think know want need
make made feel felt look looks thanks thank please sorry yes wow lol omg
"""
WORDS = WORD_LIST.split()
CHARACTERS = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'\"#@:;-()")


def write_vocab(path: Path) -> Path:
    # Every single character also exists as a "##" continuation, so any text tokenizes
    # into known pieces rather than collapsing into [UNK].
    pieces = SPECIAL_TOKENS + sorted(set(WORDS)) + CHARACTERS + [f"##{c}" for c in CHARACTERS]
    path.write_text("\n".join(dict.fromkeys(pieces)) + "\n", encoding="utf-8")
    return path


def card_text(front_matter: dict[str, Any], body: str) -> str:
    return f"---\n{yaml.safe_dump(front_matter, sort_keys=False)}---\n\n{body}\n"


def make_tiny_classifier(
    path: Path | str,
    labels: Sequence[str],
    seed: int = 0,
    *,
    front_matter: dict[str, Any] | None = None,
    card_body: str | None = None,
) -> Path:
    """Save a random tiny BertForSequenceClassification with `labels` as id2label, its
    tokenizer and a README.md card, at `path`; returns the path."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = write_vocab(path / "vocab.txt")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    meta = {
        "license": "apache-2.0",
        "pipeline_tag": "text-classification",
        "tags": ["text-classification", "tiny", "test"],
        "datasets": [],
        "downloads": 10,
        **(front_matter or {}),
    }
    body = card_body or (
        f"# {path.name}\n\nA tiny random BERT for tests. Labels: {', '.join(labels)}."
    )
    (path / "README.md").write_text(card_text(meta, body), encoding="utf-8")
    return path


def make_keyword_classifier(
    path: Path,
    labels: Sequence[str],
    keywords: dict[str, Sequence[str]],
    default: str,
    *,
    bias: dict[str, float] | None = None,
    problem_type: str | None = None,
    front_matter: dict | None = None,
) -> Path:
    """A tiny BERT whose weights are set, not trained: a text containing a keyword of label L
    is classified L, a text with none is `default`; `bias` then skews the classifier.

    Embeddings are zero except each keyword's, a direction of its own; layer 1 attends
    uniformly with identity values, so [CLS] becomes the layer-normed mean of the keyword
    directions; everything else passes through, and the classifier reads the directions.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    path.mkdir(parents=True, exist_ok=True)
    # tests.helpers.make_tiny_classifier passes `vocab_file=`, which transformers 5 ignores
    # (its tokenizer then knows only the special tokens); `vocab=` loads the word list.
    tokenizer = BertTokenizer(vocab=str(write_vocab(path / "vocab.txt")), do_lower_case=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        problem_type=problem_type,
    )
    model = BertForSequenceClassification(config)

    def direction(label: str):
        vector = torch.zeros(config.hidden_size)
        vector[2 * labels.index(label)] = 1.0
        vector[2 * labels.index(label) + 1] = -1.0
        return vector

    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        norms = [model.bert.embeddings.LayerNorm]
        for layer in model.bert.encoder.layer:
            norms += [layer.attention.output.LayerNorm, layer.output.LayerNorm]
        for norm in norms:
            norm.weight.fill_(1.0)
        for label, words in keywords.items():
            for word in words:
                index = tokenizer.convert_tokens_to_ids(word)
                assert index != tokenizer.unk_token_id, word
                model.bert.embeddings.word_embeddings.weight[index] = direction(label)
        first = model.bert.encoder.layer[0]
        first.attention.self.value.weight.copy_(torch.eye(config.hidden_size))
        first.attention.output.dense.weight.copy_(torch.eye(config.hidden_size))
        model.bert.pooler.dense.weight.copy_(torch.eye(config.hidden_size))
        for label in keywords:
            model.classifier.weight[labels.index(label)] = 5 * direction(label)
        model.classifier.bias[labels.index(default)] = 5.0
        for label, value in (bias or {}).items():
            model.classifier.bias[labels.index(label)] = value
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    meta = {"license": "apache-2.0", "pipeline_tag": "text-classification", **(front_matter or {})}
    (path / "README.md").write_text(
        card_text(meta, "# Tweet sentiment\n\nSentiment of tweets: negative, neutral, positive."),
        encoding="utf-8",
    )
    return path
