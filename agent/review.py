"""Reviewers: who labels the samples the committee disagreed on (the LLM, or gold labels)."""

from __future__ import annotations

import importlib.resources
import logging
import re
from dataclasses import dataclass
from typing import Protocol

import jinja2
import yaml
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from agent.llm import LLMClient

log = logging.getLogger(__name__)

# A label is one word or a short phrase, but models like to add a period or a sentence around it.
DEFAULT_MAX_ANSWER_TOKENS = 24
_DELIMITER = re.compile(r"<\s*(/?)\s*text\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class ReviewItem:
    id: str
    text: str
    votes: dict[str, str]  # model id -> the task label it voted


@dataclass(frozen=True)
class Verdict:
    id: str
    label: str | None
    source: str  # "llm" | "oracle" | "needs_human"
    raw: str = ""  # the reviewer's own answer, kept for audit


class Reviewer(Protocol):
    name: str

    def review(self, items: list[ReviewItem]) -> list[Verdict]:
        """One verdict per item, in the same order; never drops one."""
        ...


def parse_label(answer: str, labels: list[str]) -> str | None:
    """The single label an answer names, or None when it names none or several."""
    cleaned = answer.strip().strip("\"'`*.:;!").strip()
    for label in labels:
        if cleaned == label:
            return label
    for label in labels:
        if cleaned.casefold() == label.casefold():
            return label
    spans = []
    for label in labels:
        pattern = rf"(?<!\w){re.escape(label)}(?!\w)"
        spans += [(m.start(), m.end(), label) for m in re.finditer(pattern, answer, re.IGNORECASE)]
    # "non-toxic" also contains "toxic": a match inside a longer match is not a mention.
    named = {
        label
        for start, end, label in spans
        if not any(s <= start and end <= e and (s, e) != (start, end) for s, e, _ in spans)
    }
    return named.pop() if len(named) == 1 else None


def escape_delimiters(text: str) -> str:
    """Neutralise <text> tags inside a sample so it cannot close its own data block."""
    return _DELIMITER.sub(lambda m: f"&lt;{m.group(1)}text&gt;", text)


def load_prompt(name: str) -> dict[str, jinja2.Template]:
    source = importlib.resources.files("prompts").joinpath(f"{name}.yaml").read_text("utf-8")
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False
    )
    return {part: env.from_string(text) for part, text in yaml.safe_load(source).items()}


class LLMReviewer:
    """Labels each sample with its own LLM call (the paper's Table B prompt).

    One sample per call means a text that tries to instruct the model can only ever change its
    own label; batching several samples into one prompt would give it reach over its neighbours.
    """

    name = "llm"

    def __init__(
        self,
        client: LLMClient,
        labels: list[str],
        task_description: str,
        label_descriptions: dict[str, str] | None = None,
        max_answer_tokens: int = DEFAULT_MAX_ANSWER_TOKENS,
    ) -> None:
        self.client = client
        self.labels = list(labels)
        self.max_answer_tokens = max_answer_tokens
        self._templates = load_prompt("review")
        # The same system message for every sample lets llama.cpp reuse its evaluated prefix.
        self._system = SystemMessage(
            self._templates["system"].render(
                labels=self.labels,
                task_description=task_description,
                label_descriptions=label_descriptions or {},
            )
        )

    def messages_for(self, text: str) -> list[BaseMessage]:
        user = self._templates["user"].render(text=escape_delimiters(text))
        return [self._system, HumanMessage(user)]

    def review(self, items: list[ReviewItem]) -> list[Verdict]:
        return [self._review_one(item) for item in items]

    def _review_one(self, item: ReviewItem) -> Verdict:
        messages = self.messages_for(item.text)
        answer = self._ask(messages, "review")
        label = parse_label(answer, self.labels)
        if label is None:
            reminder = self._templates["reminder"].render(answer=answer, labels=self.labels)
            messages += [AIMessage(answer), HumanMessage(reminder)]
            answer = self._ask(messages, "review-retry")
            label = parse_label(answer, self.labels)
        if label is None:
            log.info("sample %s: no single label in %r; needs a human", item.id, answer)
            return Verdict(item.id, None, "needs_human", raw=answer)
        return Verdict(item.id, label, "llm", raw=answer)

    def _ask(self, messages: list[BaseMessage], purpose: str) -> str:
        return self.client.complete(messages, purpose, max_tokens=self.max_answer_tokens)


class OracleReviewer:
    """Answers with the gold label: the paper's "+Human" rows, for evaluation runs."""

    name = "oracle"

    def __init__(self, gold: dict[str, str]) -> None:
        self.gold = gold

    def review(self, items: list[ReviewItem]) -> list[Verdict]:
        verdicts = []
        for item in items:
            label = self.gold.get(item.id)
            if label is None:
                log.warning("no gold label for sample %s; it needs a human", item.id)
                verdicts.append(Verdict(item.id, None, "needs_human"))
            else:
                verdicts.append(Verdict(item.id, label, "oracle", raw=label))
        return verdicts
