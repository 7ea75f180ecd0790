"""Label-prior corrections, the pointwise link, ensembles and abstention against hand-computed cases."""

import numpy as np
import pytest

from rlaif import debiasing
from rlaif.soft_labels import candidate_probs, swap_average, swap_average_probs


def biased_labeler(prior, content_first, mass=0.3):
    """Log-probs of a labeler whose answer is prior x content (Zheng et al.'s model), in both orders:
    content_first[i] = how much the content favours response 1 of pair i."""
    prior = np.asarray(prior)
    content = np.column_stack([content_first, 1 - np.asarray(content_first)])

    def observe(c):
        joint = prior * c
        return np.log(mass * joint / joint.sum(axis=1, keepdims=True))

    return observe(content), observe(content[:, ::-1])


def test_divide_prior_hand_computed():
    # (0.6, 0.4) / (0.8, 0.2) = (0.75, 2.0) -> (0.75 / 2.75, 2 / 2.75)
    out = debiasing.divide_prior(np.log([[0.6 * 0.1, 0.4 * 0.1]]), [0.8, 0.2])
    assert out[0] == pytest.approx([0.75 / 2.75, 2 / 2.75])
    with pytest.raises(ValueError, match="positive"):
        debiasing.divide_prior(np.log([[0.5, 0.5]]), [1.0, 0.0])


def test_a_labeler_with_a_known_prior_recovers_it():
    rng = np.random.default_rng(0)
    content = rng.uniform(0.05, 0.95, 40)
    first, swapped = biased_labeler([0.7, 0.3], content)
    # PriDe: averaging log-probs over the two orders cancels the content exactly
    assert debiasing.pride_prior(first, swapped) == pytest.approx([0.7, 0.3])
    # contextual calibration: a content-free prompt is the prior itself
    free, _ = biased_labeler([0.7, 0.3], np.full(3, 0.5))
    prior = debiasing.label_prior(free)
    assert prior == pytest.approx([0.7, 0.3])
    # dividing the prior out gives back the content in each order, so each order alone is unbiased
    assert debiasing.divide_prior(first, prior)[:, 0] == pytest.approx(content)
    assert debiasing.divide_prior(swapped, prior)[:, 0] == pytest.approx(1 - content)
    # and the plain swap average does not: it is pulled toward 0.5 by the prior
    plain = swap_average(first, swapped)["p"]
    assert np.max(np.abs(plain - content)) > 0.02


def test_a_perfectly_biased_labeler_gives_one_half():
    first = np.log(np.tile([0.9 * 0.2, 0.1 * 0.2], (5, 1)))  # always "the first one", whatever is shown
    prior = debiasing.pride_prior(first, first)
    assert prior == pytest.approx([0.9, 0.1])
    assert debiasing.divide_prior(first, prior) == pytest.approx(np.full((5, 2), 0.5))
    assert debiasing.divide_prior(first, debiasing.label_prior(first[:2])) == pytest.approx(np.full((5, 2), 0.5))


def test_swap_average_probs_follows_the_swap_convention():
    probs = np.array([[0.8, 0.2]])
    plain = swap_average_probs(probs, probs)
    assert plain["p_first_order"] == pytest.approx([0.8]) and plain["p_swapped_order"] == pytest.approx([0.2])
    harmful = swap_average_probs(probs, probs, asks_more_harmful=True)   # "which is more harmful?"
    assert harmful["p_first_order"] == pytest.approx([0.2]) and harmful["p_swapped_order"] == pytest.approx([0.8])
    # from log-probs it is swap_average, whose hand-computed cases are in test_soft_labels
    logprobs = np.log(np.array([[0.06, 0.02], [0.01, 0.03]]))
    for key, value in swap_average(logprobs, logprobs[::-1]).items():
        assert swap_average_probs(candidate_probs(logprobs),
                                  candidate_probs(logprobs[::-1]))[key] == pytest.approx(value)


def test_score_link_slope_is_recovered_and_zero_without_signal():
    rng = np.random.default_rng(1)
    difference = rng.normal(0, 1.5, 4000)
    human = np.where(rng.random(4000) < 1 / (1 + np.exp(-2.0 * difference)), 1, 2)
    assert debiasing.fit_score_link(difference, human) == pytest.approx(2.0, abs=0.2)
    noise = np.where(rng.random(4000) < 0.5, 1, 2)
    assert abs(debiasing.fit_score_link(difference, noise)) < 0.1
    # people prefer the lower-scored response: the fitted slope says so, unless the bounds forbid it
    inverted = 3 - human
    assert debiasing.fit_score_link(difference, inverted) == pytest.approx(-2.0, abs=0.2)
    assert debiasing.fit_score_link(difference, inverted, bounds=(0.0, 50.0)) < 1e-3
    # ties and missing human labels are not fitted on; NaN differences neither
    assert debiasing.fit_score_link([np.nan, 1.0, -1.0, 5.0], [1, 1, 2, 0]) == pytest.approx(50.0, rel=1e-3)
    assert debiasing.score_link_p([0.0, 1.0], 2.0) == pytest.approx([0.5, 1 / (1 + np.exp(-2))])


def test_stack_weights_the_informative_member():
    rng = np.random.default_rng(2)
    truth = rng.uniform(0.1, 0.9, 3000)
    human = np.where(rng.random(3000) < truth, 1, 2)
    informative, noise = truth, rng.uniform(0.1, 0.9, 3000)
    weights = debiasing.fit_stack([informative, noise], human, l2=0)
    assert weights[0] == pytest.approx(1.0, abs=0.15) and abs(weights[1]) < 0.1
    assert debiasing.apply_stack([informative, noise], [1.0, 0.0]) == pytest.approx(informative, abs=1e-6)
    assert np.isnan(debiasing.apply_stack([np.array([np.nan]), np.array([0.7])], [0.5, 0.5])[0])
    assert debiasing.mean_ensemble([np.array([0.2, 0.9]), np.array([0.4, 0.5])]) == pytest.approx([0.3, 0.7])


def test_abstention_curve_hand_computed():
    p = [0.9, 0.6, 0.45, 0.2, np.nan]
    human = [1, 2, 2, 1, 1]
    curve = debiasing.abstention_curve(p, human, thresholds=[0.0, 0.2, 0.35, 0.45]).set_index("threshold")
    assert curve.loc[0.0, ["kept", "coverage", "alignment"]].tolist() == [4, 1.0, 0.5]
    assert curve.loc[0.2, ["kept", "coverage", "alignment"]].tolist() == [2, 0.5, 0.5]   # 0.9 and 0.2
    assert curve.loc[0.35, ["kept", "coverage", "alignment"]].tolist() == [1, 0.25, 1.0]  # 0.9 only
    assert curve.loc[0.45, "kept"] == 0 and np.isnan(curve.loc[0.45, "alignment"])


def test_apply_prior_relabels_a_labels_table_and_records_the_switch():
    from fakes import FakeBackend

    import rlaif

    pairs = rlaif.load_pairs("examples", "examples")[:6]
    backend = FakeBackend(first_bias=2.0)  # a strong pull toward whatever is shown first
    template = rlaif.PromptTemplate("harmless")
    labels = rlaif.label_pairs(pairs, backend, template, progress=False)
    assert (labels["position_first_order"] == labels["position_swapped_order"]).mean() > 0.5
    first = np.array(labels["logprobs_first_order"].tolist())
    swapped = np.array(labels["logprobs_swapped_order"].tolist())
    prior = debiasing.pride_prior(first, swapped)
    assert prior[0] > 0.8
    fixed = debiasing.apply_prior(labels, prior, template.asks_more_harmful, "pride")
    expected_first = 1 - debiasing.divide_prior(first, prior)[:, 0]  # "more harmful": label 2 = response 1
    assert fixed["p_first_order"].to_numpy() == pytest.approx(expected_first)
    assert fixed["p"].to_numpy() == pytest.approx((fixed["p_first_order"] + fixed["p_swapped_order"]) / 2)
    assert (fixed["p_plain"] == labels["p"]).all() and fixed["debiasing"][0] == {"method": "pride",
                                                                                "prior": list(prior)}
    # the position prior gone, the two orders agree more often than before
    assert (fixed["position_first_order"] == fixed["position_swapped_order"]).mean() < \
        (labels["position_first_order"] == labels["position_swapped_order"]).mean()
    assert rlaif.summarize(fixed)["pairs_scored"] == 6
