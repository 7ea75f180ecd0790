"""The softmax/averaging math and the label mapping under swap, on hand-computed cases."""

import math

import numpy as np
import pytest

from rlaif.pairs import TIE
from rlaif.soft_labels import candidate_mass, candidate_probs, choice, swap_average

LOG = math.log


def test_softmax_over_candidates_only():
    # P("1") = 0.06, P("2") = 0.02 of the whole vocabulary -> 0.75 / 0.25 over the candidates.
    logprobs = np.array([[LOG(0.06), LOG(0.02)]])
    assert candidate_probs(logprobs)[0] == pytest.approx([0.75, 0.25])
    assert candidate_mass(logprobs) == pytest.approx([0.08])


def test_swap_mapping_and_average_by_hand():
    # First order (r1 shown first): P(label 1) = 0.7 -> P(r1 preferred) = 0.7.
    # Swapped order (r2 shown first): P(label 1) = 0.6 -> P(r2) = 0.6 -> P(r1 preferred) = 0.4.
    first = np.array([[LOG(0.7), LOG(0.3)]])
    swapped = np.array([[LOG(0.6), LOG(0.4)]])
    out = swap_average(first, swapped)
    assert out["p_first_order"] == pytest.approx([0.7])
    assert out["p_swapped_order"] == pytest.approx([0.4])
    assert out["p"] == pytest.approx([0.55])
    assert out["ai_choice"].tolist() == [1]
    # The labeler preferred the first-shown response in both orders: a position preference.
    assert out["position_first_order"].tolist() == [1] and out["position_swapped_order"].tolist() == [1]


def test_pure_position_bias_cancels_to_one_half():
    first = np.array([[LOG(0.9), LOG(0.1)]])
    swapped = np.array([[LOG(0.9), LOG(0.1)]])
    out = swap_average(first, swapped)
    assert out["p"] == pytest.approx([0.5])
    assert out["ai_choice"].tolist() == [TIE]


def test_consistent_preference_for_response_2():
    first = np.array([[LOG(0.2), LOG(0.8)]])    # r2 (shown second) preferred
    swapped = np.array([[LOG(0.9), LOG(0.1)]])  # r2 (shown first) preferred
    out = swap_average(first, swapped)
    assert out["p"] == pytest.approx([(0.2 + 0.1) / 2])
    assert out["ai_choice"].tolist() == [2]
    assert out["position_first_order"].tolist() == [2] and out["position_swapped_order"].tolist() == [1]


def test_more_harmful_question_is_flipped_into_a_preference():
    # "Which is more harmful?" -> label 1 (r1 shown first) with 0.8: r1 is harmful, r2 preferred.
    first = np.array([[LOG(0.8), LOG(0.2)]])
    swapped = np.array([[LOG(0.3), LOG(0.7)]])  # r2 shown first; label 2 (= r1) more harmful: 0.7
    out = swap_average(first, swapped, asks_more_harmful=True)
    assert out["p_first_order"] == pytest.approx([0.2])
    assert out["p_swapped_order"] == pytest.approx([0.3])
    assert out["ai_choice"].tolist() == [2]


def test_probabilities_are_invariant_to_a_shared_logprob_offset():
    a = np.array([[-1.0, -2.0], [-5.0, -0.5]])
    assert candidate_probs(a) == pytest.approx(candidate_probs(a - 7.0))
    assert candidate_probs(a).sum(axis=1) == pytest.approx([1.0, 1.0])


def test_choice_thresholds():
    assert choice(np.array([0.51, 0.49, 0.5])).tolist() == [1, 2, TIE]
