"""The promotion gate: its closed form, its decisions, and its error rates over simulated verdict streams."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from service.core.quality.gate import PRIOR, Gate, PairCounts, log_evidence, one_look_p

POSITIVE = "defective"
SEED = 20261206
RUNS = 2000
HORIZON = 1500  # judged pairs per simulated run
MIN_PAIRS = 100


@pytest.mark.parametrize(("wins", "losses"), [(0, 0), (5, 2), (60, 40), (30, 70), (0, 12), (140, 60)])
def test_evidence_is_the_mixture_integral(wins: int, losses: int) -> None:
    def ratio(q: float) -> float:
        return q**wins * (1 - q) ** losses / 0.5 ** (wins + losses) * 2 * stats.beta.pdf(q, PRIOR, PRIOR)

    integral, _ = integrate.quad(ratio, 0.5, 1)
    assert math.exp(log_evidence(wins, losses)) == pytest.approx(integral, rel=1e-7)


def test_evidence_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="counts must be >= 0"):
        log_evidence(-1, 3)


def test_pairs_are_counted_by_who_was_right() -> None:
    rows = [
        ("defective", "defective", "defective", 7),  # both right
        ("functional", "defective", "functional", 3),  # the candidate only
        ("defective", "functional", "defective", 2),  # the candidate only, a positive
        ("defective", "defective", "functional", 5),  # the served version only, a positive
        ("functional", "defective", "defective", 4),  # both wrong
    ]
    counts = PairCounts.of(rows, POSITIVE)
    assert counts == PairCounts(pairs=21, candidate_only=5, served_only=5, positives=14, recall_gained=2,
                                recall_lost=5)
    assert counts.reversed() == PairCounts(21, 5, 5, 14, 5, 2)


def test_gate_waits_for_the_minimum_of_pairs_however_lopsided() -> None:
    verdict = Gate(alpha=0.05, min_pairs=100).promotion(PairCounts(pairs=60, candidate_only=40, served_only=0))
    assert verdict.decision == "wait"
    assert verdict.evidence > 1e6
    assert verdict.waiting_for == "40 more judged pairs (of 100)"


def test_gate_passes_on_evidence_and_says_what_it_waits_for_before() -> None:
    gate = Gate(alpha=0.05, min_pairs=100)
    weak = gate.promotion(PairCounts(pairs=300, candidate_only=22, served_only=18))
    assert weak.decision == "wait"
    assert weak.waiting_for is not None
    assert "needs 20" in weak.waiting_for
    strong = gate.promotion(PairCounts(pairs=300, candidate_only=60, served_only=20))
    assert strong.decision == "pass"
    assert strong.waiting_for is None
    assert strong.evidence >= 20
    assert strong.one_look_p < 1e-4


def test_a_more_accurate_candidate_that_misses_positives_is_blocked() -> None:
    # More right answers overall, but 30 positives missed that the served version found, 2 the other way.
    counts = PairCounts(pairs=500, candidate_only=120, served_only=40, positives=120, recall_gained=2,
                        recall_lost=30)
    verdict = Gate(alpha=0.05, min_pairs=100).promotion(counts)
    assert verdict.evidence >= 20  # accuracy alone would pass
    assert verdict.decision == "blocked"
    assert verdict.waiting_for is not None
    assert "loses recall" in verdict.waiting_for


def test_rollback_passes_on_accuracy_or_on_lost_recall_at_half_alpha_each() -> None:
    gate = Gate(alpha=0.05, min_pairs=100)
    assert gate.rollback(PairCounts(pairs=300, candidate_only=60, served_only=20)).decision == "pass"
    lost_recall = PairCounts(pairs=300, candidate_only=30, served_only=30, positives=90, recall_gained=25,
                             recall_lost=1)
    verdict = gate.rollback(lost_recall)
    assert verdict.decision == "pass"
    assert verdict.threshold == pytest.approx(40)
    assert gate.rollback(PairCounts(pairs=300, candidate_only=25, served_only=30)).decision == "wait"


@pytest.mark.parametrize(("alpha", "min_pairs"), [(0.0, 10), (1.0, 10), (0.05, 0)])
def test_gate_refuses_settings_it_cannot_honour(alpha: float, min_pairs: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        Gate(alpha=alpha, min_pairs=min_pairs)


# --- simulated verdict streams --------------------------------------------------------------------------------
# Each judged pair: the served version right or wrong, the candidate right or wrong. Versions of one classifier
# agree on most images: 84 % of pairs are concordant; the discordant 16 % split by how much better one is.


def simulate(candidate_only: float, served_only: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (candidate-only, served-only) counts after each pair, RUNS x HORIZON."""
    draw = rng.random((RUNS, HORIZON))
    wins = np.cumsum(draw < candidate_only, axis=1)
    losses = np.cumsum((draw >= candidate_only) & (draw < candidate_only + served_only), axis=1)
    return wins, losses


def promoted_when(wins: np.ndarray, losses: np.ndarray, alpha: float) -> np.ndarray:
    """The first pair (1-based) after which the gate, looked at after every verdict, passes; 0 if never."""
    passed = (log_evidence(wins, losses) >= math.log(1 / alpha)) & (np.arange(1, HORIZON + 1) >= MIN_PAIRS)
    return np.where(passed.any(axis=1), passed.argmax(axis=1) + 1, 0)


def test_the_vectorised_simulation_decides_as_the_gate() -> None:
    rng = np.random.default_rng(SEED)
    wins, losses = simulate(0.11, 0.05, rng)
    first = promoted_when(wins[:1], losses[:1], 0.05)[0]
    gate = Gate(alpha=0.05, min_pairs=MIN_PAIRS)
    decisions = [gate.promotion(PairCounts(n + 1, int(wins[0, n]), int(losses[0, n]))).decision
                 for n in range(HORIZON)]
    assert first > 0
    assert decisions.index("pass") + 1 == first


def test_a_truly_better_candidate_is_promoted_after_enough_pairs() -> None:
    rng = np.random.default_rng(SEED)
    when = promoted_when(*simulate(0.11, 0.05, rng), alpha=0.05)  # accuracy +6 points
    assert (when > 0).mean() >= 0.95
    assert np.median(when[when > 0]) < 600


def test_a_truly_worse_candidate_is_never_promoted() -> None:
    rng = np.random.default_rng(SEED)
    when = promoted_when(*simulate(0.05, 0.11, rng), alpha=0.05)
    assert (when > 0).sum() == 0


def test_an_equal_candidate_is_promoted_at_most_alpha_of_the_time_when_looked_at_every_verdict() -> None:
    rng = np.random.default_rng(SEED)
    when = promoted_when(*simulate(0.08, 0.08, rng), alpha=0.05)
    rate = (when > 0).mean()
    # Measured with this seed: 0.0265 (53 of 2,000 runs) over 1,500 verdicts each.
    assert rate <= 0.05
    print(f"false promotions: {rate:.4f} of {RUNS} runs")


def test_repeated_mcnemar_looks_inflate_false_promotions() -> None:
    """Why the gate is sequential: McNemar's exact test at alpha = 0.05, looked at after every verdict."""
    rng = np.random.default_rng(SEED)
    wins, losses = simulate(0.08, 0.08, rng)
    p = stats.binom.sf(wins - 1, wins + losses, 0.5)  # P(X >= wins): one_look_p, vectorised
    passed = (p <= 0.05) & (wins + losses > 0) & (np.arange(1, HORIZON + 1) >= MIN_PAIRS)
    rate = passed.any(axis=1).mean()
    assert one_look_p(int(wins[0, -1]), int(losses[0, -1])) == pytest.approx(p[0, -1])
    # Measured with this seed: 0.2300, 4.6 times alpha.
    assert rate > 3 * 0.05
    print(f"false promotions with repeated one-look tests: {rate:.4f}")
