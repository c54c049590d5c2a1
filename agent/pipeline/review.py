"""Reviewers: who labels the samples the committee disagreed on (the LLM, or gold labels)."""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from agent.committee.selection import Teacher
from agent.domain import Purpose, ShotLayout, Source
from agent.llm.batch import Polling, Request
from agent.llm.client import Completion, LLMClient, TokenLogprobs
from agent.llm.endpoint import Endpoint, PromptTooLong
from agent.llm.pricing import BudgetExhausted, Price, approx_tokens
from agent.prompting import escape_tag, load_prompt

log = logging.getLogger(__name__)

# A label is one word or a short phrase, but models like to add a period or a sentence around it.
DEFAULT_MAX_ANSWER_TOKENS = 24
_BATCH_ENTRY = re.compile(r'"\s*(\d+)\s*"\s*:\s*"([^"]*)"')
# What a batch answer has said when the next token starts sample N's label: `..."N": "`.
_BATCH_LABEL_START = re.compile(r'"\s*(\d+)\s*"\s*:\s*"?\s*$')
# Alternatives asked for at each answer token: the labels' first tokens are among the top few
# whenever the model weighs them at all (the rest of the mass goes to spellings like " Positive").
TOP_LOGPROBS = 10
# The raw answer kept for a sample whose prompt does not fit the endpoint's context even alone.
TOO_LONG = "(the text does not fit the LLM's context window)"

# A metered API charges the instructions once per call, so many samples per call pay; a local
# llama.cpp server keeps the unchanged system prompt evaluated, so single calls are cheap there
# while a long batch prompt is read at 45-117 tokens/s (README: measured batch sizes).
REMOTE_BATCH = 20
LOCAL_BATCH = 1


def batch_size_for(requested: int | str, endpoint: Endpoint) -> int:
    """`--review-batch auto|N`: N, or what pays on this kind of endpoint."""
    if requested != "auto":
        return int(requested)
    return LOCAL_BATCH if endpoint.local else REMOTE_BATCH


@dataclass(frozen=True)
class Example:
    """A labeled row of the run shown to the reviewer before a sample (retrieval few-shot)."""

    text: str
    label: str  # a task label


@dataclass(frozen=True)
class ReviewItem:
    id: str
    text: str
    votes: dict[str, str]  # model id -> the task label it voted
    # Labeled rows like this one, shown before it (agent.pipeline.shots picks them), the
    # nearest last; empty: the prompt is the bare Table B prompt.
    examples: tuple[Example, ...] = ()


@dataclass(frozen=True)
class Verdict:
    id: str
    label: str | None
    source: Source  # LLM, ORACLE, NEEDS_HUMAN or CAPPED (label None for the last two)
    raw: str = ""  # the reviewer's own answer, kept for audit
    # The reviewer's probability of each task label, from the endpoint's token log-probs;
    # None where the endpoint returned none (or the answer's tokens name no label).
    probabilities: dict[str, float] | None = None


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


def _piece(token: str) -> str:
    return token.strip().strip("\"'`*").casefold()


def label_distribution(top: dict[str, float], words: Sequence[str]) -> dict[str, float] | None:
    """Word -> probability, from the log-probs of the tokens that may start an answer: each
    token that starts exactly one label word (or is one, with something after it) counts for
    that word ("Pos", " positive" and "positive" all for positive), a token that could start
    several counts for none, and the words' mass is normalised. None when no token names one."""
    mass = dict.fromkeys(words, 0.0)
    for token, logprob in top.items():
        piece = _piece(token)
        if not piece:
            continue
        named = [
            w for w in words if w.casefold().startswith(piece) or piece.startswith(w.casefold())
        ]
        if len(named) == 1:
            mass[named[0]] += math.exp(logprob)
    total = sum(mass.values())
    return None if total <= 0 else {word: m / total for word, m in mass.items()}


def first_token_word(answer: str, words: Sequence[str]) -> str | None:
    """The word a one-token answer starts, when it starts exactly one ("neg", "Negative" and
    " negative" start negative); None when it starts none or several (a quote, "n" before
    negative and neutral), and the answer has to be asked for whole."""
    piece = _piece(answer)
    if not piece:
        return None
    named = [w for w in words if w.casefold().startswith(piece)]
    return named[0] if len(named) == 1 else None


def answer_distribution(
    logprobs: Sequence[TokenLogprobs] | None, words: Sequence[str]
) -> dict[str, float] | None:
    """A single-label answer's distribution over the words, read at its first token that is
    not a quote, bracket or space: where the model chose which label to say."""
    for token, top in logprobs or ():
        if _piece(token):
            return label_distribution(top, words)
    return None


def batch_distributions(
    logprobs: Sequence[TokenLogprobs] | None, words: Sequence[str]
) -> dict[int, dict[str, float]]:
    """Sample number -> distribution over the words, each read at the first token of the label
    a batch answer gives that number (`"N": "label"`)."""
    found: dict[int, dict[str, float]] = {}
    said = ""
    for token, top in logprobs or ():
        start = _BATCH_LABEL_START.search(said)
        if start is not None and _piece(token) and int(start.group(1)) not in found:
            distribution = label_distribution(top, words)
            if distribution is not None:
                found[int(start.group(1))] = distribution
        said += token
    return found


def batch_examples(items: Sequence[ReviewItem], limit: int) -> list[Example]:
    """The examples one batch call shows: every label any of its samples' examples has, then
    each sample's nearest example in turn, its second nearest, ..., up to `limit`; shown
    farthest rank first, so the samples' nearest stand last, next to them."""
    ranked = [list(reversed(item.examples)) for item in items]  # nearest first
    order = [
        nearest[rank]
        for rank in range(max(map(len, ranked), default=0))
        for nearest in ranked
        if rank < len(nearest)
    ]
    chosen: list[Example] = []
    for label in dict.fromkeys(e.label for e in order):
        if len(chosen) < limit:
            chosen.append(next(e for e in order if e.label == label))
    for example in order:
        if len(chosen) >= limit:
            break
        if example not in chosen:
            chosen.append(example)
    return sorted(chosen, key=order.index, reverse=True)


def parse_batch(answer: str, n: int, labels: list[str]) -> dict[int, str]:
    """Sample number (1..n) -> label, from the `"N": "label"` entries of a batch answer.

    Read entry by entry rather than as one JSON document, so an answer cut off by the token
    limit, fenced in markdown or wrapped in prose still gives the samples it did label. An
    entry outside 1..n, one that is not a single label, and a number given two different
    labels give nothing: those samples are asked again one by one.
    """
    parsed: dict[int, str | None] = {}
    for key, value in _BATCH_ENTRY.findall(answer):
        number, label = int(key), parse_label(value, labels)
        if not 1 <= number <= n:
            continue
        parsed[number] = label if parsed.get(number, label) == label else None
    return {number: label for number, label in parsed.items() if label is not None}


class LLMReviewer:
    """Labels samples with the LLM: the paper's Table B prompt, one sample or a batch per call.

    Labels may be shown to the LLM as other words (`label_words`: bearish -> negative) that it
    understands better; answers are parsed in those words and mapped back. In a batch every
    sample is numbered inside its own escaped <text> block, so a sample cannot close its block
    and speak as the prompt; a batch answer that misses or garbles a sample sends that sample
    to its own call, so none is lost, and a single-sample answer without a label gets one
    reminder before the sample goes to a human. Past the client's budget, samples keep the
    committee's label (Source.CAPPED).
    """

    name = "llm"

    def __init__(
        self,
        client: LLMClient,
        labels: list[str],
        task_description: str,
        label_descriptions: dict[str, str] | None = None,
        label_words: dict[str, str] | None = None,
        batch_size: int = 1,
        max_answer_tokens: int = DEFAULT_MAX_ANSWER_TOKENS,
        shots: int = 0,
        concurrency: int = 1,
        probabilities: bool = True,
        shot_layout: ShotLayout = ShotLayout.FIXED,
        self_check: float | None = None,
        first_token: bool = False,
        batch_jobs: Path | None = None,
        polling: Polling = Polling(),
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        # Requests in flight at once: a remote API serves them side by side (the client's
        # cache, ledger and budget are exact under threads); a local server, one at a time.
        self.concurrency = concurrency
        if shots < 0:
            raise ValueError(f"shots must be 0 or more, not {shots}")
        self.client = client
        self.labels = list(labels)
        self.batch_size = batch_size
        # Labeled examples the pipeline attaches to each sample (ReviewItem.examples); 0: none.
        self.shots = shots
        self.shot_layout = ShotLayout(shot_layout)
        self.max_answer_tokens = max_answer_tokens
        # Ask a single sample for one answer token first, and for the whole answer only where
        # that token could start more than one label: llama-cpp-python's server sorts the whole
        # vocabulary for every answer token it returns log-probs of, so on the bundled model a
        # one-token answer takes 0.81 s where "negative" and its end token take 1.07 s.
        self.first_token = first_token
        # Where the endpoint's Batch API jobs are kept (`--review-batch-api`): the opening
        # request of every group goes in one job before the review (LLMClient.prefetch);
        # None: call by call.
        self.batch_jobs = batch_jobs
        self.polling = polling
        # An answer whose own probability is below this is asked once more with the
        # committee's votes shown (`--review-self-check`); None or 0: never.
        if self_check is not None and not 0 <= self_check <= 1:
            raise ValueError(f"self_check must be in [0, 1], not {self_check}")
        self.self_check = self_check
        # Ask for the answer tokens' log-probs, so each verdict carries a probability per label.
        self.top_logprobs = TOP_LOGPROBS if probabilities else None
        self._warned_no_logprobs = False
        words = label_words or {}
        self.words = [words.get(label, label) for label in self.labels]
        if len({w.casefold() for w in self.words}) < len(self.words):
            raise ValueError(f"two labels would be shown as the same word: {self.words}")
        self._label_of_word = dict(zip(self.words, self.labels, strict=True))
        context = {
            "labels": self.words,
            "task_description": task_description,
            "label_descriptions": {
                words.get(label, label): meaning
                for label, meaning in (label_descriptions or {}).items()
            },
        }
        self._word_of_label = dict(zip(self.labels, self.words, strict=True))
        self._templates = load_prompt("review")
        self._batch_templates = load_prompt("review_batch")
        # The same system message for every sample lets llama.cpp reuse its evaluated prefix;
        # with examples it says so, and is again the same for every sample.
        self._system = {
            shown: SystemMessage(self._templates["system"].render(**context, examples=shown))
            for shown in (False, True)
        }
        self._batch_system = {
            shown: SystemMessage(self._batch_templates["system"].render(**context, examples=shown))
            for shown in (False, True)
        }

    def _user(self, text: str) -> HumanMessage:
        return HumanMessage(self._templates["user"].render(text=escape_tag(text, "text")))

    def _batch_user(self, texts: Sequence[str]) -> HumanMessage:
        escaped = [escape_tag(t, "text") for t in texts]
        return HumanMessage(self._batch_templates["user"].render(texts=escaped))

    def messages_for(self, text: str, examples: Sequence[Example] = ()) -> list[BaseMessage]:
        """The system prompt, then each example as a sample the LLM already answered, then the
        sample: every text, example or sample, escaped in its own <text> block."""
        shots: list[BaseMessage] = []
        for example in examples:
            shots += [self._user(example.text), AIMessage(self._word_of_label[example.label])]
        return [self._system[bool(examples)], *shots, self._user(text)]

    def batch_messages_for(
        self, texts: list[str], examples: Sequence[Example] = ()
    ) -> list[BaseMessage]:
        """The batch prompt; examples come first as a batch the LLM already answered."""
        shots: list[BaseMessage] = []
        if examples:
            answer = {str(n): self._word_of_label[e.label] for n, e in enumerate(examples, 1)}
            shots = [
                self._batch_user([e.text for e in examples]),
                AIMessage(json.dumps(answer, ensure_ascii=False)),
            ]
        return [self._batch_system[bool(examples)], *shots, self._batch_user(texts)]

    def batch_example_limit(self, n: int) -> int:
        """Examples one batch of n samples shows: each sample's nearest, plus `shots` more."""
        return n + self.shots

    def review(self, items: list[ReviewItem]) -> list[Verdict]:
        """Verdicts in the items' order; up to `concurrency` calls in flight at once."""
        groups = [items[i : i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        if self.batch_jobs is not None:
            opening = [self._opening_request(group) for group in groups]
            self.client.prefetch(opening, self.batch_jobs, self.polling)
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            answered = [v for group in pool.map(self._review_group, groups) for v in group]
            if self.self_check is None:
                return answered
            return list(pool.map(self._checked, items, answered))

    def unsure(self, item: ReviewItem, verdict: Verdict) -> bool:
        """An LLM answer with a probability below `self_check`, on a sample with votes."""
        return (
            self.self_check is not None
            and verdict.source == Source.LLM
            and verdict.label is not None
            and verdict.probabilities is not None
            and verdict.label in verdict.probabilities
            and verdict.probabilities[verdict.label] < self.self_check
            and bool(item.votes)
        )

    def _checked(self, item: ReviewItem, verdict: Verdict) -> Verdict:
        """The verdict, or for an unsure one the answer to one more call: the sample's own
        conversation, its first answer, then the committee's votes per label as a hint. An
        answer that names no label, or a call past the budget, leaves the first verdict."""
        if verdict.label is None or not self.unsure(item, verdict):
            return verdict
        counts = Counter(self._word_of_label.get(label) for label in item.votes.values())
        hint = self._templates["self_check"].render(
            votes={word: counts[word] for word in self.words if counts[word]}, labels=self.words
        )
        messages = [
            *self.messages_for(item.text, item.examples),
            AIMessage(self._word_of_label[verdict.label]),
            HumanMessage(hint),
        ]
        try:
            answer = self._ask(messages, Purpose.REVIEW_SELF_CHECK, self.max_answer_tokens)
        except (BudgetExhausted, PromptTooLong):
            return verdict
        word = parse_label(answer.text, self.words)
        if word is None:
            return verdict
        return self._answered(item, answer, word)

    def _review_group(self, group: list[ReviewItem]) -> list[Verdict]:
        return [self._review_one(group[0])] if len(group) == 1 else self._review_batch(group)

    def _opening_request(self, group: list[ReviewItem]) -> Request:
        """The first request a group of samples is asked with (one sample: with its examples)."""
        if len(group) == 1:
            return self._single_request(group[0].text, group[0].examples)
        examples = batch_examples(group, self.batch_example_limit(len(group)))
        return Request(
            self.batch_messages_for([item.text for item in group], examples),
            Purpose.REVIEW_BATCH,
            self.batch_answer_tokens(len(group)),
            self.top_logprobs,
        )

    def _single_request(self, text: str, examples: Sequence[Example]) -> Request:
        """One sample's first request: one answer token where the first token decides."""
        return Request(
            self.messages_for(text, examples),
            Purpose.REVIEW,
            1 if self.first_token else self.max_answer_tokens,
            self.top_logprobs,
        )

    def _review_batch(self, items: list[ReviewItem]) -> list[Verdict]:
        try:
            answer = self._send(self._opening_request(items))
        except BudgetExhausted:
            return [Verdict(item.id, None, Source.CAPPED) for item in items]
        except PromptTooLong as err:
            log.warning("a batch of %d samples: %s; asking each alone", len(items), err)
            return [self._review_one(item) for item in items]
        found = parse_batch(answer.text, len(items), self.words)
        if len(found) < len(items):
            log.info("batch answer labeled %d of %d samples: %r", len(found), len(items), answer)
        distributions = batch_distributions(answer.logprobs, self.words)
        return [
            Verdict(
                item.id,
                self._label_of_word[found[number]],
                Source.LLM,
                raw=found[number],
                probabilities=self._by_label(distributions.get(number)),
            )
            if number in found
            else self._review_one(item)
            for number, item in enumerate(items, start=1)
        ]

    def _review_one(self, item: ReviewItem) -> Verdict:
        """The verdict on one sample; a prompt past the endpoint's context is asked again
        without the examples, and a sample too long even alone goes to a person."""
        for examples in [item.examples, ()] if item.examples else [()]:
            try:
                return self._review_with(item, examples)
            except PromptTooLong as err:
                retry = "; asking without the examples" if examples else ""
                log.warning("sample %s: %s%s", item.id, err, retry)
        return Verdict(item.id, None, Source.NEEDS_HUMAN, raw=TOO_LONG)

    def _review_with(self, item: ReviewItem, examples: Sequence[Example]) -> Verdict:
        opening = self._single_request(item.text, examples)
        messages = list(opening.messages)
        try:
            answer = self._send(opening)
            if self.first_token:
                started = first_token_word(answer.text, self.words)
                if started is not None:
                    return self._answered(item, answer, started)
                answer = self._ask(messages, Purpose.REVIEW, self.max_answer_tokens)
            word = parse_label(answer.text, self.words)
            if word is None:
                reminder = self._templates["reminder"].render(answer=answer.text, labels=self.words)
                messages += [AIMessage(answer.text), HumanMessage(reminder)]
                answer = self._ask(messages, Purpose.REVIEW_RETRY, self.max_answer_tokens)
                word = parse_label(answer.text, self.words)
        except BudgetExhausted:
            return Verdict(item.id, None, Source.CAPPED)
        if word is None:
            log.info("sample %s: no single label in %r; needs a human", item.id, answer.text)
            return Verdict(item.id, None, Source.NEEDS_HUMAN, raw=answer.text)
        return self._answered(item, answer, word)

    def _answered(self, item: ReviewItem, answer: Completion, word: str) -> Verdict:
        """The LLM's verdict on one sample from a single-sample answer naming `word`, with the
        probabilities its first label token gave."""
        distribution = answer_distribution(answer.logprobs, self.words)
        return Verdict(
            item.id,
            self._label_of_word[word],
            Source.LLM,
            raw=answer.text,
            probabilities=self._by_label(distribution),
        )

    def _by_label(self, distribution: dict[str, float] | None) -> dict[str, float] | None:
        """A distribution over the shown words as one over the task's labels."""
        if distribution is None:
            return None
        return {self._label_of_word[word]: round(p, 6) for word, p in distribution.items()}

    def batch_answer_tokens(self, n: int) -> int:
        """Room for `{"12": "label", ...}`: a label word is rarely more than a token per 3 chars."""
        per_sample = 6 + max(len(word) for word in self.words) // 3
        return 8 + n * per_sample

    def _send(self, request: Request) -> Completion:
        return self._ask(list(request.messages), request.purpose, request.max_tokens)

    def _ask(self, messages: list[BaseMessage], purpose: str, max_tokens: int | None) -> Completion:
        answer = self.client.complete_scored(
            messages, purpose, max_tokens=max_tokens, top_logprobs=self.top_logprobs
        )
        if (
            self.top_logprobs is not None
            and answer.logprobs is None
            and not self._warned_no_logprobs
        ):
            self._warned_no_logprobs = True
            log.warning(
                "the LLM endpoint returns no token log-probabilities: the reviewer's answers "
                "carry no probability, each counts as its label alone"
            )
        return answer


# A meaning is one line: what an annotator reads at a glance, not an essay.
MAX_DESCRIPTION_CHARS = 200
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")


def parse_descriptions(
    answer: str, labels: list[str], label_words: dict[str, str] | None = None
) -> dict[str, str]:
    """Label -> meaning from `label: meaning` lines (or a JSON object), for every label, or {}
    when the answer misses one: the reviewer is better off with no meanings than with some."""
    words = label_words or {}
    names = {label.casefold(): label for label in labels}
    names.update({words[label].casefold(): label for label in labels if label in words})
    pairs: list[tuple[str, object]] = []
    start, end = answer.find("{"), answer.rfind("}")
    if 0 <= start < end:
        try:
            found = json.loads(answer[start : end + 1])
            pairs = list(found.items()) if isinstance(found, dict) else []
        except json.JSONDecodeError:
            pairs = []
    if not pairs:
        for line in answer.splitlines():
            key, sep, meaning = _BULLET.sub("", line).partition(":")
            if sep:
                pairs.append((key, meaning))
    meanings: dict[str, str] = {}
    for key, meaning in pairs:
        name = re.sub(r"\s*\(.*\)\s*$", "", str(key)).strip().strip("\"'`*_ ").casefold()
        text = " ".join(str(meaning).split()).strip("\"'`*_ ")
        label = names.get(name)
        if label is not None and text and label not in meanings:
            meanings[label] = text[:MAX_DESCRIPTION_CHARS]
    return {label: meanings[label] for label in labels} if len(meanings) == len(labels) else {}


def draft_label_descriptions(
    client: LLMClient,
    task_description: str,
    labels: list[str],
    label_words: dict[str, str] | None = None,
) -> dict[str, str]:
    """One line per label saying what it means, drafted by the LLM from the task description;
    {} when its answer does not describe every label."""
    words = label_words or {}
    shown = [f"{label} ({words[label]})" if label in words else label for label in labels]
    templates = load_prompt("label_descriptions")
    messages = [
        SystemMessage(templates["system"].render()),
        HumanMessage(templates["user"].render(task_description=task_description, labels=shown)),
    ]
    answer = client.complete(messages, Purpose.LABEL_DESCRIPTIONS, max_tokens=30 + 50 * len(labels))
    drafted = parse_descriptions(answer, labels, words)
    if not drafted:
        log.warning("the LLM's label descriptions miss a label; reviewing without: %r", answer)
    return drafted


@dataclass(frozen=True)
class ReviewEstimate:
    samples: int  # hard samples expected
    calls: int
    tokens_in: int
    tokens_out: int
    cost_usd: float | None  # None: no price known for the model
    batch_size: int
    affordable: int | None  # hard samples the budget pays for; None: no cap


def estimate_review(
    reviewer: LLMReviewer, texts: list[str], rows: int, escalation: float
) -> ReviewEstimate:
    """Calls, tokens and cost of reviewing a run, from the prompts of the user's own rows.

    `texts` are a few real rows: their rendered prompts give the tokens of an average call,
    with the other rows standing in for the examples a reviewer with `shots` shows.
    """
    texts = [t for t in texts if t] or ["?"]
    batch = reviewer.batch_size
    samples = math.ceil(rows * escalation)
    calls = math.ceil(samples / batch)
    group = [texts[i % len(texts)] for i in range(batch)]

    def stand_ins(n: int, after: int) -> list[Example]:
        labels = reviewer.labels
        return [
            Example(texts[(after + 1 + j) % len(texts)], labels[j % len(labels)]) for j in range(n)
        ]

    def tokens(messages: list[BaseMessage]) -> int:
        return approx_tokens("".join(str(m.content) for m in messages))

    if batch == 1:
        per_call_in = sum(
            tokens(reviewer.messages_for(t, stand_ins(reviewer.shots, n)))
            for n, t in enumerate(texts)
        ) / len(texts)
        per_call_out = approx_tokens(max(reviewer.words, key=len)) + 1
    else:
        examples = stand_ins(reviewer.batch_example_limit(batch) if reviewer.shots else 0, 0)
        messages = reviewer.batch_messages_for(group, examples)
        per_call_in = tokens(messages)
        per_call_out = reviewer.batch_answer_tokens(batch)
    tokens_in, tokens_out = round(calls * per_call_in), round(calls * per_call_out)
    price: Price | None = reviewer.client.price
    cost = None if price is None else price.cost(tokens_in, tokens_out)
    budget = reviewer.client.budget
    affordable = None
    if budget is not None and (budget.max_calls is not None or budget.max_cost_usd is not None):
        calls_left = math.inf
        if budget.max_calls is not None:
            calls_left = max(0, budget.max_calls - budget.calls)
        if budget.max_cost_usd is not None and cost:
            calls_left = min(calls_left, (budget.max_cost_usd - budget.cost_usd) / (cost / calls))
        if calls_left != math.inf:
            affordable = min(samples, int(max(0, calls_left)) * batch)
    return ReviewEstimate(samples, calls, tokens_in, tokens_out, cost, batch, affordable)


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
                verdicts.append(Verdict(item.id, None, Source.NEEDS_HUMAN))
            else:
                verdicts.append(Verdict(item.id, label, Source.ORACLE, raw=label))
        return verdicts


def teacher_of(reviewer: Reviewer) -> Teacher:
    """Selection's teacher: the reviewer's label for each (row id, text). Asked before any row
    is labeled, so without examples: the run's LLM cache answers the same request again free,
    but review and audit, which show the run's examples, ask their own."""

    def teach(rows: list[tuple[str, str]]) -> list[str | None]:
        verdicts = reviewer.review([ReviewItem(id=i, text=text, votes={}) for i, text in rows])
        return [verdict.label for verdict in verdicts]

    return teach
