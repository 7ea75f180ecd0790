"""From candidate-label log-probs in two orders to P(response 1 preferred).

Conventions: in each order the first label names the response shown first. The
"first order" shows (response_1, response_2); the "swapped order" shows
(response_2, response_1). Every probability returned here means "response 1 is
preferred", whatever the order or the question (a "more harmful" question is
flipped).
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp, softmax

from rlaif.pairs import TIE


def candidate_probs(logprobs: np.ndarray) -> np.ndarray:
    """Softmax over the candidate labels only (not the vocabulary): rows sum to 1 (NaN where all are -inf)."""
    with np.errstate(invalid="ignore"):
        return softmax(np.asarray(logprobs, dtype=np.float64), axis=-1)


def candidate_mass(logprobs: np.ndarray) -> np.ndarray:
    """Probability mass the model put on the candidates; low mass means the prompt is not working."""
    with np.errstate(invalid="ignore"):
        return np.exp(logsumexp(np.asarray(logprobs, dtype=np.float64), axis=-1))


def _shown_first(position_probs: np.ndarray, asks_more_harmful: bool) -> np.ndarray:
    """P(the response shown first is preferred), from [n, 2] probabilities of (label_first, label_second)."""
    return position_probs[:, 1] if asks_more_harmful else position_probs[:, 0]


def swap_average(logprobs_first_order: np.ndarray, logprobs_swapped_order: np.ndarray,
                 asks_more_harmful: bool = False) -> dict[str, np.ndarray]:
    """Per-order and averaged P(response 1 preferred), plus the position each order preferred.

    In the swapped order response 1 is shown second, so its probability is
    1 - P(shown first preferred). Averaging the two cancels a pure position bias.
    """
    return swap_average_probs(candidate_probs(logprobs_first_order), candidate_probs(logprobs_swapped_order),
                              asks_more_harmful)


def swap_average_probs(probs_first_order: np.ndarray, probs_swapped_order: np.ndarray,
                       asks_more_harmful: bool = False) -> dict[str, np.ndarray]:
    """``swap_average`` from [n, 2] probabilities of the two positions in each order (rows summing to 1,
    e.g. after a prior was divided out, ``rlaif.debiasing``). Positions of a NaN row are undefined."""
    first = _shown_first(np.asarray(probs_first_order, dtype=np.float64), asks_more_harmful)
    swapped = 1.0 - _shown_first(np.asarray(probs_swapped_order, dtype=np.float64), asks_more_harmful)
    p = (first + swapped) / 2.0
    position_first, position_swapped = preferred_positions(first, swapped)
    return {"p_first_order": first, "p_swapped_order": swapped, "p": p, "ai_choice": choice(p),
            "position_first_order": position_first, "position_swapped_order": position_swapped}


def preferred_positions(p_first_order: np.ndarray, p_swapped_order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The position (1 = shown first, 2 = shown second) preferred in each order, from each order's
    P(response 1 preferred); the same position in both orders is a position preference."""
    return (np.where(np.asarray(p_first_order) >= 0.5, 1, 2),
            np.where(1.0 - np.asarray(p_swapped_order) >= 0.5, 1, 2))


def choice(p: np.ndarray) -> np.ndarray:
    """1 where response 1 is more likely preferred, 2 where response 2 is, TIE where exactly even."""
    p = np.asarray(p, dtype=np.float64)
    return np.where(p > 0.5, 1, np.where(p < 0.5, 2, TIE))
