"""Metrics on labels tables: hand-computed cases, independent references on random data, and simulations."""

import math
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from rlaif import metrics
from rlaif.pairs import TIE

NAN = math.nan


def table(rows):
    """A labels table from (p, human_choice) or dicts; fills the other columns consistently."""
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            row = dict(zip(("p", "human_choice"), row))
        row = dict(row)
        p = row.get("p")
        row.setdefault("id", f"pair-{i}")
        row.setdefault("task", "t")
        row.setdefault("p_first_order", p)
        row.setdefault("p_swapped_order", p)
        if p is None:
            row.setdefault("ai_choice", None)
            row.setdefault("position_first_order", None)
            row.setdefault("position_swapped_order", None)
        else:
            row.setdefault("ai_choice", 1 if p > 0.5 else 2 if p < 0.5 else TIE)
            row.setdefault("position_first_order", 1 if row["p_first_order"] >= 0.5 else 2)
            row.setdefault("position_swapped_order", 1 if 1 - row["p_swapped_order"] >= 0.5 else 2)
        out.append(row)
    return pd.DataFrame(out)


def random_table(rng, n, accuracy=0.7, human_ties=0.1, unlabeled=0.1, invalid=0.05):
    """Random labels: a labeler right with probability ``accuracy`` on pairs with a human 1/2."""
    human = rng.choice([1, 2], size=n).astype(object)
    right = rng.random(n) < accuracy
    ai = np.where(right, human, 3 - human.astype(int))
    p = np.where(ai == 1, 0.5 + rng.random(n) / 2, 0.5 - rng.random(n) / 2)
    kind = rng.random(n)
    human[kind < human_ties] = TIE
    human[(kind >= human_ties) & (kind < human_ties + unlabeled)] = None
    p = p.astype(object)
    p[rng.random(n) < invalid] = None
    return table([(p[i], human[i]) for i in range(n)])


# --------------------------------------------------------------------------- scored / alignment


HAND = table([
    (0.9, 1),   # right
    (0.3, 2),   # right
    (0.6, 2),   # wrong
    (0.5, 1),   # exact AI tie: wrong
    (0.52, 1),  # right, but inside a 0.05 tie band
    (0.8, TIE),  # human tie: not scored
    (0.1, None),  # unlabeled: not scored
    (None, 1),   # skipped: not scored
])


def test_scored_rows_and_alignment_by_hand():
    rows = metrics.scored(HAND)
    assert rows["id"].tolist() == [f"pair-{i}" for i in range(5)]
    assert rows["agree"].tolist() == [True, True, False, False, True]
    assert metrics.alignment(HAND) == pytest.approx(3 / 5)
    # tie band 0.05: p = 0.52 becomes an AI tie, a disagreement
    banded = metrics.scored(HAND, tie_band=0.05)
    assert banded["ai_choice"].tolist() == [1, 2, 1, TIE, TIE]
    assert metrics.alignment(HAND, tie_band=0.05) == pytest.approx(2 / 5)
    assert math.isnan(metrics.alignment(HAND.iloc[5:]))
    with pytest.raises(ValueError):
        metrics.scored(HAND, tie_band=-0.1)


def test_scored_accepts_json_style_columns():
    # Read back from JSON: floats for choices, None/NaN for missing, object dtype.
    frame = pd.DataFrame({"id": ["a", "b", "c"], "p": [0.8, None, 0.3],
                          "ai_choice": [1.0, np.nan, None], "human_choice": [1.0, 2.0, 2.0]})
    rows = metrics.scored(frame)
    assert rows["ai_choice"].tolist() == [1, 2]  # missing ai_choice derived from p
    assert metrics.alignment(frame) == 1.0


def test_alignment_matches_report_summary():
    from rlaif.analysis.report import summarize
    labels = random_table(np.random.default_rng(3), 300).assign(candidate_mass=1.0)
    assert metrics.alignment(labels) == pytest.approx(summarize(labels)["alignment"])


# --------------------------------------------------------------------------- bootstrap interval


def test_alignment_ci_degenerate_cases():
    empty = metrics.alignment_ci(HAND.iloc[5:])
    assert empty["n"] == 0 and all(math.isnan(empty[k]) for k in ("alignment", "low", "high"))
    one = metrics.alignment_ci(HAND.iloc[:1])
    assert one == {"alignment": 1.0, "low": 1.0, "high": 1.0, "n": 1}
    all_right = metrics.alignment_ci(HAND.iloc[:2])
    assert all_right == {"alignment": 1.0, "low": 1.0, "high": 1.0, "n": 2}


def test_alignment_ci_is_seeded_and_brackets_the_estimate():
    labels = random_table(np.random.default_rng(0), 400)
    ci = metrics.alignment_ci(labels, n_resamples=1000, seed=1)
    assert ci == metrics.alignment_ci(labels, n_resamples=1000, seed=1)
    assert ci["low"] < ci["alignment"] < ci["high"]
    assert ci["alignment"] == pytest.approx(metrics.alignment(labels))
    # about +-1.96 binomial standard errors
    se = math.sqrt(ci["alignment"] * (1 - ci["alignment"]) / ci["n"])
    assert ci["high"] - ci["low"] == pytest.approx(2 * 1.96 * se, rel=0.15)
    bca = metrics.alignment_ci(labels, n_resamples=1000, seed=1, method="BCa")
    assert bca["low"] == pytest.approx(ci["low"], abs=0.02) and bca["high"] == pytest.approx(ci["high"], abs=0.02)


def test_bootstrap_interval_coverage():
    # A labeler right 70% of the time on 200 pairs; the 95% interval should cover 0.7 about 95% of the time.
    true_accuracy, n, repeats = 0.7, 200, 200
    human = np.array([1, 2] * (n // 2))
    covered = 0
    for rep in range(repeats):
        rng = np.random.default_rng(1000 + rep)
        right = rng.random(n) < true_accuracy
        ai = np.where(right, human, 3 - human)
        labels = pd.DataFrame({"id": range(n), "p": np.where(ai == 1, 0.8, 0.2), "ai_choice": ai,
                               "human_choice": human})
        ci = metrics.alignment_ci(labels, n_resamples=500, seed=rep)
        covered += ci["low"] <= true_accuracy <= ci["high"]
    assert 0.90 <= covered / repeats <= 0.99


def test_paired_difference_ci_by_hand_and_narrower_than_unpaired():
    same = metrics.paired_difference_ci([1, 0, 1, 1], [1, 0, 1, 1])
    assert same == {"difference": 0.0, "low": 0.0, "high": 0.0, "n": 4}
    rng = np.random.default_rng(0)
    b = rng.random(60) < 0.55
    a = b.copy()
    a[np.flatnonzero(~b)[:6]] = True          # a gets right 6 pairs b gets wrong, and nothing else differs
    paired = metrics.paired_difference_ci(a, b, seed=1)
    assert paired["difference"] == pytest.approx(6 / 60) and paired["low"] > 0  # every resample: d >= 0
    separate = [metrics.alignment_ci(pd.DataFrame({"p": np.where(x, 0.9, 0.1), "human_choice": 1}), seed=1)
                for x in (a, b)]
    assert separate[0]["low"] < separate[1]["high"]    # the two intervals overlap: unpaired, no verdict
    assert paired == metrics.paired_difference_ci(a, b, seed=1)
    with pytest.raises(ValueError, match="one entry per pair"):
        metrics.paired_difference_ci([1, 0], [1])


def test_alignment_by_group():
    labels = pd.concat([HAND.assign(task="a"), table([(0.9, 2), (0.8, 1)]).assign(task="b"),
                        table([(None, 1)]).assign(task="c")], ignore_index=True)
    groups = metrics.alignment_by_group(labels, n_resamples=200)
    assert list(groups.columns) == ["alignment", "low", "high", "n"]
    assert groups.index.tolist() == ["a", "b", "c"]
    assert groups.loc["a", "alignment"] == pytest.approx(3 / 5) and groups.loc["a", "n"] == 5
    assert groups.loc["b", "alignment"] == pytest.approx(1 / 2) and groups.loc["b", "n"] == 2
    assert groups.loc["c", "n"] == 0 and math.isnan(groups.loc["c", "alignment"])
    assert groups.loc["a", "low"] <= groups.loc["a", "alignment"] <= groups.loc["a", "high"]
    assert metrics.alignment_by_group(labels, tie_band=0.05, n_resamples=200).loc["a", "alignment"] == \
        pytest.approx(2 / 5)
    assert metrics.alignment_by_group(labels.iloc[:0]).empty


# --------------------------------------------------------------------------- kappa


def test_cohens_kappa_by_hand():
    # confusion: (1,1)=20, (1,2)=5, (2,1)=10, (2,2)=15; p_o = 0.7, p_e = 0.5*0.6 + 0.5*0.4 = 0.5 -> 0.4
    a = [1] * 25 + [2] * 25
    b = [1] * 20 + [2] * 5 + [1] * 10 + [2] * 15
    assert metrics.cohens_kappa(a, b) == pytest.approx(0.4)
    assert metrics.cohens_kappa(a, a) == pytest.approx(1.0)
    assert metrics.cohens_kappa([1, 2, 1, 2], [2, 1, 2, 1]) == pytest.approx(-1.0)
    assert metrics.cohens_kappa(["x", "y"], ["x", "y"]) == pytest.approx(1.0)
    # degenerate: both raters always say 1 -> p_e = 1, kappa undefined
    assert math.isnan(metrics.cohens_kappa([1, 1, 1], [1, 1, 1]))
    assert math.isnan(metrics.cohens_kappa([], []))
    # missing labels are dropped pairwise
    assert metrics.cohens_kappa(a + [None], b + [1]) == pytest.approx(0.4)
    with pytest.raises(ValueError):
        metrics.cohens_kappa([1, 2], [1])


def kappa_reference(a, b):
    categories = sorted(set(a) | set(b))
    confusion = np.zeros((len(categories), len(categories)))
    for x, y in zip(a, b):
        confusion[categories.index(x), categories.index(y)] += 1
    n = confusion.sum()
    p_o = np.trace(confusion) / n
    p_e = np.sum(confusion.sum(axis=1) * confusion.sum(axis=0)) / n**2
    return (p_o - p_e) / (1 - p_e)


@settings(max_examples=examples(100), deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 1, 2]), st.sampled_from([0, 1, 2])), min_size=2, max_size=60))
def test_cohens_kappa_against_confusion_matrix(pairs):
    a, b = [x for x, _ in pairs], [y for _, y in pairs]
    if len(set(a) | set(b)) == 1:
        assert math.isnan(metrics.cohens_kappa(a, b))
    else:
        assert metrics.cohens_kappa(a, b) == pytest.approx(kappa_reference(a, b), abs=1e-12)


def test_ai_human_kappa():
    rows = metrics.scored(HAND)
    assert metrics.ai_human_kappa(HAND) == pytest.approx(
        kappa_reference(rows["ai_choice"].tolist(), rows["human_choice"].tolist()))
    labels = random_table(np.random.default_rng(5), 500)
    rows = metrics.scored(labels, tie_band=0.1)
    assert metrics.ai_human_kappa(labels, tie_band=0.1) == pytest.approx(
        kappa_reference(rows["ai_choice"].tolist(), rows["human_choice"].tolist()))


# --------------------------------------------------------------------------- several annotators


def test_fleiss_kappa_wikipedia_example():
    # https://en.wikipedia.org/wiki/Fleiss%27_kappa worked example: 10 items, 14 raters, 5 categories
    counts = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
              [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert metrics.fleiss_kappa(counts) == pytest.approx(0.210, abs=5e-4)


def with_annotators(choices_per_row, p_per_row):
    rows = []
    for choices, p in zip(choices_per_row, p_per_row):
        meta = {} if choices is None else {"human_choices": choices}
        rows.append({"p": p, "human_choice": None, "metadata": meta})
    return table(rows)


def test_human_agreement_and_ai_vs_annotators_by_hand():
    labels = with_annotators([[1, 1, 2], [2, 2], [1], None, [1, 0, 1, 1]], [0.7, 0.9, 0.2, 0.3, None])
    # row 1: 1 of 3 annotator pairs agree; row 2: 1 of 1; row 5: 3 of 6 (p missing does not matter here)
    result = metrics.human_agreement(labels)
    assert result["pairs"] == 3
    assert result["mean_pairwise_agreement"] == pytest.approx((1 / 3 + 1 + 3 / 6) / 3)
    # Fleiss: P_i = 1/3, 1, 1/2; p_1 = 5/9, p_2 = 3/9, p_0 = 1/9
    p_bar, p_e = (1 / 3 + 1 + 1 / 2) / 3, (25 + 9 + 1) / 81
    assert result["fleiss_kappa"] == pytest.approx((p_bar - p_e) / (1 - p_e))
    # AI picks 1 on row 1 (agrees with 2 of 3) and 1 on row 2 (0 of 2); row 5 has no valid p
    assert metrics.ai_vs_annotators(labels) == pytest.approx((2 / 3 + 0) / 2)


def test_human_agreement_none():
    labels = with_annotators([[1], None], [0.7, 0.2])
    assert metrics.human_agreement(labels)["pairs"] == 0
    assert math.isnan(metrics.human_agreement(labels)["fleiss_kappa"])
    assert math.isnan(metrics.ai_vs_annotators(labels))
    assert metrics.human_agreement(HAND)["pairs"] == 0  # no metadata column


def test_human_agreement_against_pairwise_loop():
    rng = np.random.default_rng(7)
    choices = [list(rng.choice([1, 2, 0], size=rng.integers(2, 6), p=[0.5, 0.4, 0.1])) for _ in range(200)]
    p = rng.random(200)
    labels = with_annotators(choices, p)
    per_row = [np.mean([x == y for x, y in combinations(c, 2)]) for c in choices]
    assert metrics.human_agreement(labels)["mean_pairwise_agreement"] == pytest.approx(np.mean(per_row))
    ai = np.where(p > 0.5, 1, 2)
    assert metrics.ai_vs_annotators(labels) == pytest.approx(
        np.mean([np.mean([c == ai[i] for c in cs]) for i, cs in enumerate(choices)]))


# --------------------------------------------------------------------------- counts


def test_tie_counts():
    assert metrics.tie_counts(HAND) == {"human_ties": 1, "ai_ties": 1, "unlabeled": 1, "invalid": 1}
    assert metrics.tie_counts(HAND, tie_band=0.05)["ai_ties"] == 2


# --------------------------------------------------------------------------- calibration


def test_calibration_by_hand():
    labels = table([(0.9, 1), (0.8, 2), (0.15, 2), (0.3, 1), (0.5, TIE)])
    result = metrics.calibration(labels, bins=2)
    # bin [0, .5): p .15, .3; y 0, 1 -> mean_p .225, frac .5; bin [.5, 1]: p .9, .8; y 1, 0 -> .85, .5
    table_ = result["table"]
    assert table_["n"].tolist() == [2, 2]
    assert table_["mean_p"].tolist() == pytest.approx([0.225, 0.85])
    assert table_["frac_positive"].tolist() == pytest.approx([0.5, 0.5])
    assert table_["bin_low"].tolist() == [0.0, 0.5] and table_["bin_high"].tolist() == [0.5, 1.0]
    assert result["n"] == 4
    assert result["ece"] == pytest.approx(0.5 * 0.275 + 0.5 * 0.35)
    assert result["brier"] == pytest.approx((0.01 + 0.64 + 0.0225 + 0.49) / 4)
    assert result["log_loss"] == pytest.approx(-(math.log(0.9) + math.log(0.2) + math.log(0.85) + math.log(0.3)) / 4)


def test_calibration_edges_and_empty():
    labels = table([(1.0, 1), (0.0, 1)])
    result = metrics.calibration(labels, bins=10)
    assert result["table"]["n"].tolist() == [1] + [0] * 8 + [1]
    assert result["log_loss"] == pytest.approx(-math.log(1e-12) / 2)  # p = 0 clipped
    empty = metrics.calibration(HAND.iloc[5:])
    assert empty["n"] == 0 and math.isnan(empty["ece"]) and empty["table"]["n"].sum() == 0


def calibration_reference(p, y, bins):
    """Straightforward loop over bins and rows."""
    ece, total = 0.0, len(p)
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        members = [i for i in range(total) if low <= p[i] < high or (b == bins - 1 and p[i] == 1.0)]
        if members:
            mean_p = sum(p[i] for i in members) / len(members)
            frac = sum(y[i] for i in members) / len(members)
            ece += len(members) / total * abs(frac - mean_p)
    brier = sum((p[i] - y[i]) ** 2 for i in range(total)) / total
    loss = 0.0
    for i in range(total):
        q = min(max(p[i], 1e-12), 1 - 1e-12)
        loss -= math.log(q) if y[i] == 1 else math.log(1 - q)
    return ece, brier, loss / total


@pytest.mark.parametrize("bins", [1, 7, 10])
def test_calibration_against_loop(bins):
    labels = random_table(np.random.default_rng(bins), 400)
    rows = metrics.scored(labels)
    p, y = rows["p"].tolist(), (rows["human_choice"] == 1).astype(int).tolist()
    result = metrics.calibration(labels, bins=bins)
    ece, brier, loss = calibration_reference(p, y, bins)
    assert result["ece"] == pytest.approx(ece)
    assert result["brier"] == pytest.approx(brier)
    assert result["log_loss"] == pytest.approx(loss)
    assert result["table"]["n"].sum() == result["n"] == len(p)


def test_accuracy_by_confidence_by_hand():
    # confidences: .8 (right), .4 (right), .2 (wrong), 0 (tie: wrong), .04 (right), .9 (wrong)
    labels = table([(0.9, 1), (0.3, 2), (0.6, 2), (0.5, 1), (0.52, 1), (0.05, 1), (0.8, TIE)])
    frame = metrics.accuracy_by_confidence(labels, bins=5)
    assert list(frame.columns) == ["low", "high", "n", "accuracy", "kept_share", "accuracy_if_kept"]
    assert frame["low"].tolist() == pytest.approx([0, 0.2, 0.4, 0.6, 0.8])
    assert frame["n"].tolist() == [2, 1, 1, 0, 2]
    assert frame["accuracy"].tolist()[:3] == pytest.approx([0.5, 0.0, 1.0])
    assert math.isnan(frame["accuracy"][3]) and frame["accuracy"][4] == pytest.approx(0.5)
    assert frame["kept_share"].tolist() == pytest.approx([1, 4 / 6, 3 / 6, 2 / 6, 2 / 6])
    assert frame["accuracy_if_kept"].tolist() == pytest.approx([3 / 6, 2 / 4, 2 / 3, 1 / 2, 1 / 2])


def test_accuracy_by_confidence_against_filter():
    labels = random_table(np.random.default_rng(11), 500)
    rows = metrics.scored(labels)
    confidence = 2 * (rows["p"] - 0.5).abs()
    frame = metrics.accuracy_by_confidence(labels, bins=4)
    for _, row in frame.iterrows():
        kept = rows[confidence >= row["low"]]
        assert row["kept_share"] == pytest.approx(len(kept) / len(rows))
        assert row["accuracy_if_kept"] == pytest.approx(kept["agree"].mean())
        in_bin = rows[(confidence >= row["low"]) & ((confidence < row["high"]) | (row["high"] == 1.0))]
        assert row["n"] == len(in_bin)
    assert frame["n"].sum() == len(rows)


# --------------------------------------------------------------------------- temperature


def simulated(rng, n, sharpness):
    """Outcomes drawn with sigmoid(z); forecasts p = sigmoid(sharpness * z) (> 1: overconfident)."""
    z = rng.normal(0, 2, size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    return 1 / (1 + np.exp(-sharpness * z)), y


@pytest.mark.parametrize("sharpness", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_known_temperature(sharpness):
    # logit(p) = sharpness * z, so sigmoid(logit(p) / T) is the true probability at T = sharpness.
    p, y = simulated(np.random.default_rng(int(sharpness * 10)), 20000, sharpness)
    assert metrics.fit_temperature(p, y) == pytest.approx(sharpness, rel=0.06)


def test_apply_temperature():
    p = np.array([0.1, 0.5, 0.9, np.nan])
    assert metrics.apply_temperature(p, 1.0)[:3] == pytest.approx(p[:3])
    softened = metrics.apply_temperature(p, 2.0)
    # logit(0.9) = log 9; halved: sigmoid(log 3) = 0.75
    assert softened[:3] == pytest.approx([0.25, 0.5, 0.75])
    assert math.isnan(softened[3])
    assert math.isnan(metrics.fit_temperature([], []))


def test_temperature_scaling_improves_overconfident_labels():
    rng = np.random.default_rng(2)
    p, y = simulated(rng, 4000, 3.0)
    labels = table([(p[i], 1 if y[i] else 2) for i in range(len(p))])
    result = metrics.temperature_scaling(labels, holdout_fraction=0.5, seed=0)
    assert set(result) == {"temperature", "before", "after"}
    assert result["temperature"] == pytest.approx(3.0, rel=0.15)
    for key in ("ece", "brier", "log_loss"):
        assert result["after"][key] < result["before"][key]
    # the reported "before" numbers are calibration on the held-out half
    order = np.random.default_rng(0).permutation(len(p))
    held = labels.iloc[order[:2000]]
    assert result["before"]["log_loss"] == pytest.approx(metrics.calibration(held)["log_loss"])
    assert result == metrics.temperature_scaling(labels, holdout_fraction=0.5, seed=0)
    nothing = metrics.temperature_scaling(HAND.iloc[:1])
    assert math.isnan(nothing["temperature"]) and math.isnan(nothing["after"]["ece"])


# --------------------------------------------------------------------------- biases


def test_position_bias_by_hand():
    labels = table([
        {"p": 0.6, "human_choice": 1, "p_first_order": 0.9, "p_swapped_order": 0.3},  # positions 1, 1
        {"p": 0.4, "human_choice": 1, "p_first_order": 0.2, "p_swapped_order": 0.6},  # positions 2, 2
        {"p": 0.8, "human_choice": 2, "p_first_order": 0.9, "p_swapped_order": 0.7},  # positions 1, 2
        {"p": 0.5, "human_choice": 2, "p_first_order": 0.8, "p_swapped_order": 0.2},  # positions 1, 1
        {"p": None, "human_choice": 1},
    ])
    result = metrics.position_bias(labels)
    assert result["n"] == 4
    assert result["same_first"] == pytest.approx(2 / 4)
    assert result["same_second"] == pytest.approx(1 / 4)
    assert result["same_position"] == pytest.approx(3 / 4)
    assert result["mean_p_shown_first_first_order"] == pytest.approx((0.9 + 0.2 + 0.9 + 0.8) / 4)
    assert result["mean_p_shown_first_swapped_order"] == pytest.approx((0.7 + 0.4 + 0.3 + 0.8) / 4)
    empty = metrics.position_bias(labels.iloc[4:])
    assert empty["n"] == 0 and math.isnan(empty["same_position"])


def test_position_bias_matches_report_summary():
    from rlaif.analysis.report import summarize
    labels = random_table(np.random.default_rng(4), 300).assign(candidate_mass=1.0)
    ours, theirs = metrics.position_bias(labels), summarize(labels)["position_bias"]
    assert ours["same_position"] == pytest.approx(theirs["same_position_both_orders"])
    assert ours["same_first"] == pytest.approx(theirs["same_first"])


def test_length_bias_by_hand():
    labels = table([
        {"p": 0.9, "human_choice": 1, "length_1": 100, "length_2": 50},   # ratio 2: AI longer, human longer
        {"p": 0.2, "human_choice": 1, "length_1": 100, "length_2": 50},   # ratio 2: AI shorter, human longer
        {"p": 0.8, "human_choice": 1, "length_1": 50, "length_2": 100},   # ratio .5: AI shorter, human shorter
        {"p": 0.7, "human_choice": 2, "length_1": 90, "length_2": 100},   # ratio .9: AI shorter, human longer
        {"p": 0.7, "human_choice": 2, "length_1": 5, "length_2": 0},      # ratio inf: AI longer, human shorter
        {"p": 0.6, "human_choice": 1, "length_1": 40, "length_2": 40},    # equal lengths: left out
        {"p": 0.6, "human_choice": TIE, "length_1": 10, "length_2": 40},  # human tie: left out
    ])
    result = metrics.length_bias(labels)
    assert result["n"] == 5
    assert result["ai_prefers_longer"] == pytest.approx(2 / 5)
    assert result["human_prefers_longer"] == pytest.approx(3 / 5)
    frame = result["table"]
    assert frame.index.tolist() == ["[0, 0.8)", "[0.8, 1.25)", "[1.25, inf)"]
    assert frame["n"].tolist() == [1, 1, 3]
    assert frame["alignment"].tolist() == pytest.approx([1.0, 0.0, 1 / 3])
    assert frame["ai_prefers_longer"].tolist() == pytest.approx([0.0, 0.0, 2 / 3])
    assert frame["human_prefers_longer"].tolist() == pytest.approx([0.0, 1.0, 2 / 3])
    none = metrics.length_bias(HAND)  # no length columns
    assert none["n"] == 0 and math.isnan(none["ai_prefers_longer"]) and none["table"]["n"].sum() == 0


# --------------------------------------------------------------------------- two labelers


def mcnemar_reference(b, c):
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def test_labeler_agreement_by_hand():
    a = table([(0.9, 1), (0.8, 1), (0.3, 1), (0.6, 2), (0.7, TIE), (0.9, 1)])
    b = table([(0.2, 1), (0.9, 1), (0.8, 1), (0.3, 2), (0.2, TIE), (None, 1)])
    b.loc[5, "id"] = "pair-5"
    b = pd.concat([b, table([{"id": "only-b", "p": 0.9, "human_choice": 1}])], ignore_index=True)
    result = metrics.labeler_agreement(a, b)
    # common valid: pair-0..4; ai a = 1,1,2,1,1; ai b = 2,1,1,2,2
    assert result["common_pairs"] == 5
    assert result["agreement"] == pytest.approx(1 / 5)
    assert result["kappa"] == pytest.approx(kappa_reference([1, 1, 2, 1, 1], [2, 1, 1, 2, 2]))
    # scored in both: pair-0..3 (human 1,1,1,2): a right at 0,1; b right at 1,2,3
    assert result["alignment_a"] == pytest.approx(2 / 4) and result["alignment_b"] == pytest.approx(3 / 4)
    assert (result["mcnemar_b"], result["mcnemar_c"]) == (1, 2)
    assert result["mcnemar_p"] == pytest.approx(1.0)
    same = metrics.labeler_agreement(a, a)
    assert same["agreement"] == 1.0 and same["mcnemar_b"] == same["mcnemar_c"] == 0 and same["mcnemar_p"] == 1.0


def test_labeler_agreement_against_reference():
    rng = np.random.default_rng(9)
    a = random_table(rng, 400, accuracy=0.75, invalid=0.0)
    b = a.copy()
    flip = rng.random(len(b)) < 0.3
    b.loc[flip, "p"] = 1 - b.loc[flip, "p"].astype(float)
    b.loc[flip, "ai_choice"] = 3 - b.loc[flip, "ai_choice"].astype(int)
    b = b.sample(frac=1.0, random_state=1)  # order must not matter
    result = metrics.labeler_agreement(a, b)
    merged = a.merge(b, on="id", suffixes=("_a", "_b"))
    scored_both = merged[merged["human_choice_a"].isin([1, 2])]
    right_a = scored_both["ai_choice_a"] == scored_both["human_choice_a"]
    right_b = scored_both["ai_choice_b"] == scored_both["human_choice_a"]
    count_b, count_c = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    assert (result["mcnemar_b"], result["mcnemar_c"]) == (count_b, count_c)
    assert result["mcnemar_p"] == pytest.approx(mcnemar_reference(count_b, count_c))
    assert result["agreement"] == pytest.approx(1 - flip.mean())
    assert result["kappa"] == pytest.approx(kappa_reference(merged["ai_choice_a"].tolist(),
                                                            merged["ai_choice_b"].tolist()))
    assert result["alignment_a"] == pytest.approx(metrics.alignment(a))


@pytest.mark.parametrize("b,c", [(0, 0), (0, 5), (3, 9), (10, 10), (25, 11)])
def test_mcnemar_formula(b, c):
    ids = list(range(b + c))
    a = pd.DataFrame({"id": ids, "p": [0.9] * b + [0.1] * c, "human_choice": [1] * (b + c)})
    other = pd.DataFrame({"id": ids, "p": [0.1] * b + [0.9] * c, "human_choice": [1] * (b + c)})
    result = metrics.labeler_agreement(a, other)
    assert (result["mcnemar_b"], result["mcnemar_c"]) == (b, c)
    assert result["mcnemar_p"] == pytest.approx(mcnemar_reference(b, c))


def test_labeler_agreement_rejects_conflicting_humans_and_duplicates():
    a = table([(0.9, 1)])
    with pytest.raises(ValueError, match="human_choice"):
        metrics.labeler_agreement(a, table([(0.9, 2)]))
    with pytest.raises(ValueError, match="duplicate"):
        metrics.labeler_agreement(pd.concat([a, a]), a)


def test_the_report_gives_an_exact_interval_where_every_pair_agrees():
    """A percentile bootstrap has no spread when all n pairs agree; the report then prints the exact
    (Clopper-Pearson) binomial interval, whose lower end for 12 of 12 is 0.025 ** (1 / 12) = 73.5%."""
    from rlaif.analysis.report import analyze, format_report

    full = lambda rows: table(rows).assign(candidate_mass=0.9, flags=[[] for _ in rows])  # noqa: E731
    labels = full([(0.8, 1) if i % 2 else (0.3, 2) for i in range(12)])
    line = next(line for line in format_report(analyze(labels, n_resamples=200)).splitlines()
                if line.startswith("alignment with humans"))
    assert "100.0%" in line and "exact binomial 95% CI 73.5% - 100.0%, n=12" in line
    mixed = full([(0.8, 1), (0.3, 1), (0.7, 1), (0.2, 2)])
    assert "exact binomial" not in format_report(analyze(mixed, n_resamples=200))


def test_annotator_against_the_majority_of_the_others_by_hand():
    labels = with_annotators([[1, 1, 2], [2, 2, 2], [1, 0, 2], [0, 0, 1], [1, 2]], [0.7] * 5)
    # row 1: a1 vs maj(1,2)=none, a2 vs none, a3 (2) vs maj(1,1)=1 -> 0 of 1
    # row 2: each 2 vs 2 -> 3 of 3; row 3: no two others agree -> none
    # row 4: a1 (0) vs maj(0,1)=none, a2 none, a3 (1) vs maj(0,0)=tie -> not scored;
    # row 5: others single -> a1 vs 2, a2 vs 1
    result = metrics.human_agreement(labels)
    assert result["annotator_vs_majority_n"] == 1 + 3 + 2
    assert result["annotator_vs_majority"] == pytest.approx(3 / 6)
    assert metrics.strict_majority([0, 0, 1]) == 0 and metrics.strict_majority([1, 2]) is None
    assert metrics.strict_majority([]) is None and metrics.strict_majority([2]) == 2


# --------------------------------------------------------------------------- clustered intervals

def test_cluster_bootstrap_is_wider_when_rows_within_a_cluster_move_together():
    """Forty clusters of ten identical rows carry forty rows' worth of evidence, not four hundred."""
    rng = np.random.default_rng(3)
    per_cluster = rng.random(40) < 0.7
    right = np.repeat(per_cluster, 10)
    clusters = np.repeat(np.arange(40), 10)
    plain = metrics.paired_difference_ci(right, np.zeros(400))
    clustered = metrics.paired_difference_ci(right, np.zeros(400), clusters=clusters)
    assert clustered["difference"] == plain["difference"] == pytest.approx(right.mean())
    assert (clustered["high"] - clustered["low"]) > 2.5 * (plain["high"] - plain["low"])
    # ten identical rows per cluster resample like one row per cluster
    one_row_each = metrics.paired_difference_ci(per_cluster, np.zeros(40))
    assert clustered["high"] - clustered["low"] == pytest.approx(one_row_each["high"] - one_row_each["low"], abs=0.03)


def test_cluster_bootstrap_on_independent_rows_matches_the_plain_one():
    rng = np.random.default_rng(4)
    right = rng.random(600) < 0.6
    plain = metrics.paired_difference_ci(right, np.zeros(600))
    clustered = metrics.paired_difference_ci(right, np.zeros(600), clusters=np.arange(600) // 2)
    assert clustered["high"] - clustered["low"] == pytest.approx(plain["high"] - plain["low"], rel=0.2)


def test_alignment_ci_clusters_follow_the_scored_rows_and_unequal_sizes():
    rows = [{"p": 0.9, "human_choice": 1}, {"p": 0.9, "human_choice": 0}, {"p": 0.1, "human_choice": 1},
            {"p": None, "human_choice": 2}, {"p": 0.2, "human_choice": 2}, {"p": 0.8, "human_choice": 2}]
    labels = table(rows)
    result = metrics.alignment_ci(labels, clusters=["a", "a", "b", "b", "c", "c"])
    # scored rows: 0 (a, right), 2 (b, wrong), 4 (c, right), 5 (c, wrong) -> 2 of 4
    assert result["alignment"] == pytest.approx(0.5) and result["n"] == 4
    assert 0 <= result["low"] < 0.5 < result["high"] <= 1
    # resampling clusters: the possible means are ratios of cluster sums, e.g. all "a" = 1, all "b" = 0
    assert result["low"] >= 0 and result["high"] <= 1
    with pytest.raises(ValueError, match="one entry per row"):
        metrics.alignment_ci(labels, clusters=["a"])
    single = metrics.alignment_ci(labels, clusters=["a"] * 6)
    assert single["low"] == single["high"] == single["alignment"]
