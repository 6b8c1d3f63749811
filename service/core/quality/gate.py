"""The promotion gate: a paired, always-valid test of two versions on the judged images both of them answered.

Every judged image scored in shadow was answered by both versions, so the two classifiers are compared on the
same images (a paired design, as McNemar's test): only the discordant pairs carry evidence, the ones where
exactly one version is right. Under "the candidate is no better", each discordant pair favours the candidate
with probability at most 1/2.

Why not McNemar's exact test at a fixed alpha: with PROMOTE=auto the gate is looked at after every verdict, and
a fixed-alpha test looked at after every observation rejects a true null far more often than alpha (the test
`test_repeated_mcnemar_looks_inflate_false_promotions` measures it). So the decision uses an always-valid test,
a mixture sequential probability ratio (Robbins 1970; Howard, Ramdas et al. 2021):

    E = ∫ prod_i (q / (1/2))^[candidate right] ((1 - q) / (1/2))^[served right] dπ(q),  π on q in (1/2, 1]

over the discordant pairs. For any true q <= 1/2 each factor has expectation <= 1, so E is a nonnegative
supermartingale and, by Ville's inequality, P(E ever reaches 1/alpha) <= alpha however often it is looked at
and whenever the looking stops. The mixing prior π is Beta(PRIOR, PRIOR) restricted to (1/2, 1]; E has a closed
form in the two discordant counts. McNemar's exact one-sided p-value is reported beside it for a person who
looks once, and is not used by any decision.

The gate also needs GATE_MIN_PAIRS judged pairs (a promotion on 12 verdicts is not one anyone should sign),
and no significant loss of recall of the positive class: the same test over the judged positives, run the
other way (evidence that the candidate misses positives the served version finds), must stay below 1/alpha.

Rollback is the gate run the other way, on the pairs judged after the promotion: the previous version (scored
in shadow) against the promoted one. It rolls back on evidence that the previous one is more accurate, or
that the promoted one lost positive recall; each test at alpha/2, so a rollback of a version that is not
worse happens with probability at most alpha (union bound).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from service.core.quality.beta import log_beta, log_betainc

# Beta(10, 10) restricted to (1/2, 1]: its mass sits where two versions of one classifier differ (a share of
# the discordant pairs won of 0.5-0.75). Computed: E reaches 20 after 195 discordant pairs split 60/40 (a flat
# prior: 245), 95 split 65/35 (flat: 95) and 40 split 75/25 (flat: 35).
PRIOR = 10.0

Action = Literal["promote", "rollback"]


@dataclass(frozen=True)
class PairCounts:
    """The judged images both versions answered, counted: the whole input of the gate."""

    pairs: int = 0
    candidate_only: int = 0  # the candidate right, the served version wrong
    served_only: int = 0  # the served version right, the candidate wrong
    positives: int = 0  # pairs whose verdict is the positive class
    recall_gained: int = 0  # a positive the candidate finds and the served version misses
    recall_lost: int = 0  # a positive the served version finds and the candidate misses

    @classmethod
    def of(cls, judged: Iterable[tuple[str, str, str, int]], positive: str) -> PairCounts:
        """`judged`: (true label, served label, candidate label, how many) rows."""
        pairs = candidate_only = served_only = positives = gained = lost = 0
        for truth, served, candidate, count in judged:
            pairs += count
            served_right, candidate_right = served == truth, candidate == truth
            candidate_only += count * (candidate_right and not served_right)
            served_only += count * (served_right and not candidate_right)
            if truth == positive:
                positives += count
                gained += count * (candidate_right and not served_right)
                lost += count * (served_right and not candidate_right)
        return cls(pairs, candidate_only, served_only, positives, gained, lost)

    def reversed(self) -> PairCounts:
        """The same pairs with the two versions' roles exchanged."""
        return PairCounts(self.pairs, self.served_only, self.candidate_only, self.positives, self.recall_lost,
                          self.recall_gained)


def log_evidence(wins: ArrayLike, losses: ArrayLike, prior: float = PRIOR) -> Any:
    """log E: the mixture likelihood ratio of "wins come with probability q > 1/2" against q = 1/2, after
    `wins` and `losses` discordant pairs (0 before any; -inf when all the prior's support is ruled out).
    Element-wise over arrays of counts (a float for two ints)."""
    won, lost = np.asarray(wins, dtype=float), np.asarray(losses, dtype=float)
    if (won < 0).any() or (lost < 0).any():
        raise ValueError(f"counts must be >= 0, got {wins} wins and {losses} losses")
    # ∫_{1/2}^1 q^w (1-q)^l Beta(q; a, a) dq / (1/2)^(w+l) over the prior's mass 1/2 on (1/2, 1]
    # = 2^(w+l+1) B(a+w, a+l) / B(a, a) * P(Beta(a+w, a+l) > 1/2), the tail written as I_{1/2}(a+l, a+w)
    # (1 - I_x(a, b) = I_{1-x}(b, a)) to keep its precision.
    tail = log_betainc(prior + lost, prior + won, 0.5)
    value = ((won + lost + 1) * math.log(2) + log_beta(prior + won, prior + lost) - log_beta(prior, prior) + tail)
    return float(value) if value.ndim == 0 else value


def one_look_p(wins: int, losses: int) -> float:
    """McNemar's exact one-sided p-value (wins among the discordant pairs, against 1/2): valid for one look."""
    if wins == 0:
        return 1.0
    # P(X >= wins) for X ~ Binomial(wins + losses, 1/2) is I_(1/2)(wins, losses + 1).
    return float(np.exp(log_betainc(wins, losses + 1, 0.5)))


@dataclass(frozen=True)
class Verdict:
    """The gate's answer over one set of pairs, with every figure it used (shown by GET /quality, recorded in
    the audit row)."""

    check: Action  # promote: is the shadow better than the served one; rollback: is the served one worse
    decision: Literal["pass", "wait", "blocked"]
    waiting_for: str | None  # in words, what the gate needs before it can pass
    counts: PairCounts
    evidence: float  # E for the check's direction
    recall_evidence: float  # E that recall of the positive class is lost (promote) or was lost (rollback)
    threshold: float  # 1/alpha (rollback: each test at 2/alpha)
    one_look_p: float
    alpha: float
    min_pairs: int

    def figures(self) -> dict[str, Any]:
        return {**asdict(self), "counts": asdict(self.counts)}


@dataclass(frozen=True)
class Gate:
    alpha: float = 0.05
    min_pairs: int = 200
    prior: float = PRIOR

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.min_pairs < 1:
            raise ValueError(f"min_pairs must be >= 1, got {self.min_pairs}")

    def promotion(self, counts: PairCounts) -> Verdict:
        """Promote the candidate (the shadow version) over the served one?"""
        threshold = 1 / self.alpha
        evidence = self._e(counts.candidate_only, counts.served_only)
        recall = self._e(counts.recall_lost, counts.recall_gained)  # the candidate misses positives
        if recall >= threshold:
            decision, waiting = "blocked", (
                f"the candidate loses recall of the positive class ({counts.recall_lost} positives missed that "
                f"the served version finds, {counts.recall_gained} the other way): it is not promoted"
            )
        elif counts.pairs < self.min_pairs:
            decision, waiting = "wait", f"{self.min_pairs - counts.pairs} more judged pairs (of {self.min_pairs})"
        elif evidence < threshold:
            decision, waiting = "wait", (
                f"evidence that the candidate is more accurate: E = {evidence:.3g}, needs {threshold:.3g}"
            )
        else:
            decision, waiting = "pass", None
        return Verdict("promote", decision, waiting, counts, evidence, recall, threshold,
                       one_look_p(counts.candidate_only, counts.served_only), self.alpha, self.min_pairs)

    def rollback(self, counts: PairCounts) -> Verdict:
        """Roll back to the candidate (the previous version, now in shadow): is the served one worse?"""
        threshold = 2 / self.alpha  # two tests, alpha/2 each
        evidence = self._e(counts.candidate_only, counts.served_only)  # the previous version more accurate
        recall = self._e(counts.recall_gained, counts.recall_lost)  # the served version misses positives
        if counts.pairs < self.min_pairs:
            decision, waiting = "wait", f"{self.min_pairs - counts.pairs} more judged pairs (of {self.min_pairs})"
        elif evidence >= threshold or recall >= threshold:
            decision, waiting = "pass", None
        else:
            decision, waiting = "wait", (
                f"evidence that the served version is worse: E = {evidence:.3g} (accuracy), {recall:.3g} "
                f"(recall of the positive class), either needs {threshold:.3g}"
            )
        return Verdict("rollback", decision, waiting, counts, evidence, recall, threshold,
                       one_look_p(counts.candidate_only, counts.served_only), self.alpha, self.min_pairs)

    def _e(self, wins: int, losses: int) -> float:
        # E past e^700 says what e^700 says, and stays a finite JSON number.
        return math.exp(min(log_evidence(wins, losses, self.prior), 700.0))
