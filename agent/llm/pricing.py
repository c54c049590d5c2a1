"""What LLM answers cost: prices per model, the cost of a call, and the review budget.

Costs are estimated from token counts; before a call, from ~4 characters per token
(`approx_tokens`), since a remote API's tokenizer is not reachable offline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.errors import RunError
from agent.llm.endpoint import Endpoint
from agent.store.ledger import ledger_totals

# Budget checks before a call with no answer limit assume an answer this long.
DEFAULT_EXPECTED_ANSWER_TOKENS = 256
BUDGETED_PURPOSE = "review"  # reviewer calls; the few script-writing calls are not capped


class BudgetExhausted(RunError, RuntimeError):
    """The next call would pass --max-llm-calls or --max-cost; nothing was sent."""


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: float
    output: float

    def cost(self, tokens_in: float, tokens_out: float) -> float:
        """US dollars for a call of these token counts."""
        return (tokens_in * self.input + tokens_out * self.output) / 1_000_000


FREE = Price(0.0, 0.0)  # our own llama.cpp server

DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-3.5-turbo": Price(0.50, 1.50),
}


def price_table(endpoint: Endpoint) -> Mapping[str, Price]:
    """What answers cost when the user names no price: nothing on our own server."""
    return {endpoint.model: FREE} if endpoint.local else DEFAULT_PRICES


def approx_tokens(text: str) -> int:
    """Tokens of English text without the model's tokenizer (~4 characters each), for estimates.

    A remote API's tokenizer is not reachable offline; this is within ~20% for English prose,
    which is what an estimate and a budget check before a call need.
    """
    return max(1, len(text) // 4)


@dataclass
class Budget:
    """Caps on the reviewer's paid calls; what was spent is counted from the run's ledger, so
    a resumed run keeps the budget it started with. Answers from the cache cost nothing."""

    max_calls: int | None = None
    max_cost_usd: float | None = None
    calls: int = 0
    cost_usd: float = 0.0

    @classmethod
    def from_ledger(
        cls, path: Path, max_calls: int | None = None, max_cost_usd: float | None = None
    ) -> Budget:
        spent = ledger_totals(path, cls.covers)
        return cls(max_calls, max_cost_usd, spent["calls"], spent["cost_usd"])

    @staticmethod
    def covers(purpose: str) -> bool:
        return purpose.startswith(BUDGETED_PURPOSE)

    # Calls sent and not yet answered, and their estimated cost: concurrent reviewers count
    # them against the caps, so N calls in flight never pass --max-llm-calls or --max-cost.
    pending_calls: int = 0
    pending_cost_usd: float = 0.0

    def allows(self, expected_cost_usd: float) -> bool:
        calls = self.calls + self.pending_calls
        calls_left = self.max_calls is None or calls < self.max_calls
        # The call's cost is known only afterwards; refusing on its estimate keeps the cap a cap.
        spent = self.cost_usd + self.pending_cost_usd
        money_left = self.max_cost_usd is None or spent + expected_cost_usd <= self.max_cost_usd
        return calls_left and money_left

    def reserve(self, expected_cost_usd: float) -> bool:
        """Count a call about to be sent, if the caps allow it (callers hold one lock)."""
        if not self.allows(expected_cost_usd):
            return False
        self.pending_calls += 1
        self.pending_cost_usd += expected_cost_usd
        return True

    def release(self, expected_cost_usd: float) -> None:
        """A reserved call came back (spend() then counts it) or failed."""
        self.pending_calls -= 1
        self.pending_cost_usd -= expected_cost_usd

    def spend(self, cost_usd: float) -> None:
        self.calls += 1
        self.cost_usd += cost_usd
