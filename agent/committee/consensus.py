"""The committee's arithmetic (paper eq. 2-5): majority vote, uncertainty, routing.

Pure functions over plain Python values: no torch, no I/O.

Ties: when labels share the top vote count, the one with the larger summed confidence wins,
then the one listed first in the task's labels. A tie means max_count <= k/2, so U >= 1/2: under
the default ε = 1/k every tie is routed to review and the tie-break only picks the fallback
label (kept when review is off or over budget).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from agent.domain import Route

# U is 1 - c/k, a multiple of 1/k; the tolerance keeps 1 - 2/3 >= 1/3 true in floating point.
_EPS_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Decision:
    label: str
    uncertainty: float
    agreement: float  # max_count / k
    confidence: float  # mean score of the models that voted for `label`
    route: Route


def uncertainty(votes: Sequence[str]) -> float:
    """U(x) = 1 - max_y #{y_j = y} / k (eq. 4)."""
    if not votes:
        raise ValueError("no votes")
    return 1.0 - Counter(votes).most_common(1)[0][1] / len(votes)


def majority_vote(
    votes: Sequence[str], scores: Sequence[float], label_order: Sequence[str]
) -> tuple[str, int]:
    """The majority label (eq. 3) and its vote count, with the documented tie-break."""
    counts = Counter(votes)
    mass: dict[str, float] = {}
    for vote, score in zip(votes, scores, strict=True):
        mass[vote] = mass.get(vote, 0.0) + score
    rank = {label: i for i, label in enumerate(label_order)}
    best = max(counts, key=lambda y: (counts[y], mass[y], -rank.get(y, len(rank))))
    return best, counts[best]


def route(u: float, epsilon: float) -> Route:
    """Eq. 5: direct labeling when U < ε, secondary review when U >= ε."""
    return Route.REVIEW if u >= epsilon - _EPS_TOLERANCE else Route.DIRECT


def decide(
    votes: Sequence[str], scores: Sequence[float], label_order: Sequence[str], epsilon: float
) -> Decision:
    label, count = majority_vote(votes, scores, label_order)
    k = len(votes)
    u = 1.0 - count / k
    backing = [s for v, s in zip(votes, scores, strict=True) if v == label]
    return Decision(
        label=label,
        uncertainty=u,
        agreement=count / k,
        confidence=sum(backing) / len(backing),
        route=route(u, epsilon),
    )
