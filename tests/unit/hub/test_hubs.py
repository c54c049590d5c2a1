"""ModelHub conformance: LocalHub on a folder, HfHub against a local stand-in for the Hub API.

The stand-in is a real HTTP server on 127.0.0.1 answering the routes huggingface_hub calls
(/api/models, /api/models/<id>, /<id>/resolve/<rev>/<file>) with JSON in the Hub's shape,
built from the same tiny model folder, so both hubs must tell the same story.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, unquote, urlparse

import pytest

from agent.hub.hf import HfHub
from agent.hub.local import LocalHub
from agent.hub.protocol import HubError, ModelInfo, split_front_matter

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_api_entry(model_id: str, model_dir: Path, with_sizes: bool) -> dict:
    """One model as the Hub's /api/models returns it (the fields huggingface_hub reads)."""
    meta, _ = split_front_matter((model_dir / "README.md").read_text(encoding="utf-8"))
    siblings = [
        {
            "rfilename": p.relative_to(model_dir).as_posix(),
            **({"size": p.stat().st_size} if with_sizes else {}),
        }
        for p in sorted(model_dir.rglob("*"))
        if p.is_file()
    ]
    return {
        "_id": hashlib.sha1(model_id.encode()).hexdigest()[:24],
        "id": model_id,
        "modelId": model_id,
        "author": model_id.split("/")[0],
        "sha": COMMIT,
        "private": False,
        "gated": False,
        "disabled": False,
        "downloads": meta.get("downloads", 0),
        "likes": 0,
        "library_name": "transformers",
        "pipeline_tag": meta.get("pipeline_tag"),
        "tags": ["transformers", "safetensors", "bert", *meta.get("tags", [])],
        "cardData": {k: v for k, v in meta.items() if k != "downloads"},
        "siblings": siblings,
        "createdAt": "2024-01-01T00:00:00.000Z",
        "lastModified": "2024-01-01T00:00:00.000Z",
    }


class FakeHubHandler(BaseHTTPRequestHandler):
    models: ClassVar[dict[str, Path]] = {}
    requests_seen: ClassVar[list[str]] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload, status: int = 200, headers: dict[str, str] | None = None):
        body = json.dumps(payload).encode()
        self._send(status, body, {"Content-Type": "application/json", **(headers or {})})

    def _not_found(self, code: str):
        self._json({"error": f"{code}: not found"}, 404, {"X-Error-Code": code})

    def do_GET(self):
        url = urlparse(self.path)
        path = unquote(url.path)
        self.requests_seen.append(self.path)
        if path == "/api/models":
            query = parse_qs(url.query)
            search = query.get("search", [""])[0].lower()
            entries = [
                hub_api_entry(model_id, model_dir, with_sizes=False)
                for model_id, model_dir in self.models.items()
                if search in model_id.lower()
            ]
            entries = [e for e in entries if e["pipeline_tag"] == query["pipeline_tag"][0]]
            entries.sort(key=lambda e: -e["downloads"])
            return self._json(entries[: int(query.get("limit", ["1000"])[0])])
        if path.startswith("/api/models/"):
            model_id = path.removeprefix("/api/models/").split("/revision/")[0]
            if model_id not in self.models:
                return self._not_found("RepoNotFound")
            return self._json(hub_api_entry(model_id, self.models[model_id], with_sizes=True))
        if "/resolve/" in path:
            model_id, rest = path.lstrip("/").split("/resolve/", 1)
            filename = rest.split("/", 1)[1]
            if model_id not in self.models:
                return self._not_found("RepoNotFound")
            file = self.models[model_id] / filename
            if not file.is_file():
                return self._not_found("EntryNotFound")
            body = file.read_bytes()
            etag = f'"{hashlib.sha1(body).hexdigest()}"'
            return self._send(200, body, {"ETag": etag, "X-Repo-Commit": COMMIT})
        return self._not_found("RepoNotFound")

    do_HEAD = do_GET


@contextmanager
def serve_as_hub(folder: Path) -> Iterator[tuple[str, type[FakeHubHandler]]]:
    """The models of a LocalHub folder behind a stand-in Hub API: (endpoint, handler)."""
    handler = type("Handler", (FakeHubHandler,), {"requests_seen": []})
    handler.models = {m.id: Path(m.source) for m in LocalHub(folder).list_models()}
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fake_hf_endpoint(tiny_hub):
    with serve_as_hub(tiny_hub) as served:
        yield served


@pytest.fixture(params=["local", "huggingface"])
def hub(request, tiny_hub, tmp_path):
    if request.param == "local":
        return LocalHub(tiny_hub)
    endpoint, _ = request.getfixturevalue("fake_hf_endpoint")
    return HfHub(endpoint=endpoint, token=False, cache_dir=tmp_path / "hf-cache")


def test_hub_conformance(hub):
    models = hub.list_models()
    assert [m.id for m in models] == [
        "acme/sentiment-tweets",
        "labs/sentiment-short-labels",
        "other/sentiment-generic",
        "acme/toxicity",
    ]
    assert all(isinstance(m, ModelInfo) for m in models)
    by_id = {m.id: m for m in models}
    assert by_id["acme/sentiment-tweets"].labels == ["negative", "neutral", "positive"]
    assert by_id["labs/sentiment-short-labels"].labels == ["NEG", "NEU", "POS"]
    assert by_id["acme/toxicity"].labels == ["non-toxic", "toxic"]
    generic = by_id["other/sentiment-generic"]
    assert "LABEL_0: negative" in generic.card
    assert not generic.card.startswith("---")
    assert generic.pipeline_tag == "text-classification"
    assert generic.license == "apache-2.0"
    assert "sentiment" in generic.tags
    assert generic.downloads == 100

    assert [m.id for m in hub.list_models(search="toxic")] == ["acme/toxicity"]
    assert len(hub.list_models(limit=2)) == 2

    info = hub.model_info("acme/toxicity")
    assert info.labels == ["non-toxic", "toxic"]
    assert info.size_bytes and info.size_bytes > 0
    with pytest.raises(HubError):
        hub.model_info("nobody/no-such-model")


def test_local_hub_source_loads_offline(tiny_hub):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    info = LocalHub(tiny_hub).model_info("labs/sentiment-short-labels")
    tokenizer = AutoTokenizer.from_pretrained(info.source)
    model = AutoModelForSequenceClassification.from_pretrained(info.source)
    logits = model(**tokenizer(["what a great day"], return_tensors="pt")).logits
    assert logits.shape == (1, 3)
    assert [model.config.id2label[i] for i in range(3)] == info.labels


def test_local_hub_search_reads_cards_and_tags(tiny_hub):
    hub = LocalHub(tiny_hub)
    assert [m.id for m in hub.list_models(search="REVIEWS")] == ["labs/sentiment-short-labels"]
    assert [m.id for m in hub.list_models(search="label mapping")] == ["other/sentiment-generic"]


def test_local_hub_skips_non_classifiers_and_broken_dirs(tiny_hub):
    encoder = tiny_hub / "acme" / "encoder-only"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    broken = tiny_hub / "broken__model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    ids = [m.id for m in LocalHub(tiny_hub).list_models()]
    assert "acme/encoder-only" not in ids
    assert "broken/model" not in ids
    with pytest.raises(HubError):
        LocalHub(tiny_hub).model_info("broken/model")


def test_local_hub_rejects_missing_folder(tmp_path):
    with pytest.raises(HubError):
        LocalHub(tmp_path / "absent")


def test_hf_hub_asks_for_text_classifiers_by_downloads(fake_hf_endpoint, tmp_path):
    endpoint, handler = fake_hf_endpoint
    HfHub(endpoint=endpoint, token=False, cache_dir=tmp_path).list_models(search="sentiment")
    query = parse_qs(urlparse(handler.requests_seen[0]).query)
    assert query["pipeline_tag"] == ["text-classification"]
    assert query["sort"] == ["downloads"]
    assert query["search"] == ["sentiment"]


def test_front_matter_split():
    meta, body = split_front_matter("---\nlicense: mit\ntags: [a]\n---\n\n# Title\n")
    assert meta == {"license": "mit", "tags": ["a"]}
    assert body == "# Title\n"
    assert split_front_matter("# no front matter") == ({}, "# no front matter")


def make_kinds_folder(root: Path) -> None:
    """One model of each kind a folder can hold, and a multi-label one whose card is silent."""
    from tests.fixtures.models import make_keyword_classifier, make_keyword_embedding_model

    keywords = {"negative": ["bad"], "positive": ["good"]}
    labels = ["negative", "neutral", "positive"]
    make_keyword_embedding_model(root / "org__emb", labels, keywords, "neutral")
    heads = ["toxic", "insult", "obscene"]
    decided = {"decision_labels": ["non-toxic", "toxic"]}
    make_keyword_classifier(
        root / "org__multi", heads, {"toxic": ["bad"]}, "insult",
        problem_type="multi_label_classification", front_matter=decided,
    )  # fmt: skip
    make_keyword_classifier(
        root / "org__multi-silent", heads, {"toxic": ["bad"]}, "insult",
        problem_type="multi_label_classification",
    )  # fmt: skip
    make_keyword_classifier(root / "org__plain", labels, keywords, "neutral")


KINDS_FOUND = {
    # No id2label in its config: the head's labels, from config_setfit.json.
    "org/emb": ("embedding-head", ["negative", "neutral", "positive"]),
    # Sigmoid heads whose card names its decisions: those are its labels.
    "org/multi": ("multi-label", ["non-toxic", "toxic"]),
    # A multi-label card that says nothing stays as it was (selection rejects it).
    "org/multi-silent": ("sequence-classification", ["toxic", "insult", "obscene"]),
    "org/plain": ("sequence-classification", ["negative", "neutral", "positive"]),
}


def test_each_hub_reads_each_model_kind_from_its_files_and_card(tmp_path):
    make_kinds_folder(tmp_path / "kinds")
    local = LocalHub(tmp_path / "kinds")
    assert {m.id: (m.kind, m.labels) for m in local.list_models()} == KINDS_FOUND
    with serve_as_hub(tmp_path / "kinds") as (endpoint, _):
        remote = HfHub(endpoint=endpoint, token=False, cache_dir=tmp_path / "hf-cache")
        assert {m.id: (m.kind, m.labels) for m in remote.list_models()} == KINDS_FOUND
        assert remote.model_info("org/emb").kind == "embedding-head"
