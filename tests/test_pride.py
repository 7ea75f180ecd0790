"""One-order labeling and PriDe (a sample in both orders, the rest in one), with the deterministic fake engine."""

import math

import numpy as np
import pytest
from fakes import FakeBackend

from rlaif import debiasing
from rlaif.analysis.report import format_report, summarize
from rlaif.label_store import StoreError, read_labels
from rlaif.labeler import label_pairs
from rlaif.pairs import PreferencePair
from rlaif.pride import journal_paths, label_pairs_pride, pride_sample
from rlaif.templates import PromptTemplate

TEMPLATE = PromptTemplate("instruction")


def make_pairs(n=24):
    """GOOD is response 1 on two pairs in three; the human always agrees with GOOD."""
    pairs = []
    for i in range(n):
        good_first = i % 3 != 0
        r1, r2 = ("GOOD answer", "meh answer") if good_first else ("meh answer", "GOOD answer")
        pairs.append(PreferencePair(f"p{i}", f"question {i}", r1, r2, 1 if good_first else 2, "t"))
    return pairs


def test_one_order_asks_half_the_prompts_and_keeps_the_first_orders_label():
    pairs = make_pairs(6)
    both = label_pairs(pairs, FakeBackend(first_bias=1.5), TEMPLATE, progress=False)
    backend = FakeBackend(first_bias=1.5)
    one = label_pairs(pairs, backend, TEMPLATE, progress=False, both_orders=False)
    assert len(backend.prompts_seen) == len(pairs)
    assert all(p.index("GOOD" if pair.response_1.startswith("GOOD") else "meh") <
               p.index("meh" if pair.response_1.startswith("GOOD") else "GOOD")
               for p, pair in zip(backend.prompts_seen, pairs))  # response 1 shown first in every prompt
    assert one["p"].tolist() == pytest.approx(both["p_first_order"].tolist())
    assert one["p_swapped_order"].isna().all() and one["logprobs_swapped_order"].isna().all()
    assert (one["orders"] == 1).all() and "orders" not in both
    # a strong pull toward the first position: one order alone is wrong where GOOD is shown second
    assert (one["ai_choice"] == 1).all()
    assert math.isnan(summarize(one)["position_bias"]["same_position_both_orders"])  # no pair has both orders


def test_a_one_order_file_is_not_resumed_as_a_both_orders_run(tmp_path):
    out = tmp_path / "labels.jsonl"
    label_pairs(make_pairs(4), FakeBackend(), TEMPLATE, progress=False, out=out, both_orders=False)
    with pytest.raises(StoreError):
        label_pairs(make_pairs(4), FakeBackend(), TEMPLATE, progress=False, out=out)


def test_pride_costs_n_plus_sample_prompts_and_removes_the_position_prior():
    pairs = make_pairs(24)
    backend = FakeBackend(first_bias=1.5)
    labels = label_pairs_pride(pairs, backend, TEMPLATE, sample_pairs=6, seed=3, progress=False)
    assert len(backend.prompts_seen) == len(pairs) + 6
    assert labels["id"].tolist() == [p.id for p in pairs]
    sample = pride_sample(len(pairs), 6, 3)
    assert labels["pride_sample"].to_numpy().nonzero()[0].tolist() == sample.tolist()
    prior = labels["debiasing"][0]["prior"]
    assert labels["debiasing"][0]["method"] == "pride" and labels["debiasing"][0]["sample_pairs"] == 6
    assert prior[0] == pytest.approx(1 / (1 + np.exp(-1.5)), abs=0.03)  # the fake's pull, recovered
    human = np.array([p.human_choice for p in pairs])
    assert (labels["ai_choice"].to_numpy() == human).all()
    plain_one_order = np.where(labels["p_plain"] > 0.5, 1, 2)
    assert (plain_one_order[~labels["pride_sample"].to_numpy()] == 1).all()  # before the prior left: position only
    summary = summarize(labels)
    assert summary["alignment"] == 1.0 and summary["position_bias"]["pairs_both_orders"] == 6
    assert "over the 6 pairs labeled in both orders" in format_report(summary)


def test_pride_rest_equals_the_prior_divided_out_of_a_full_runs_first_order():
    """The experiment computes PriDe from both-order passes; the one-order labeler must give the same labels."""
    pairs = make_pairs(12)
    labels = label_pairs_pride(pairs, FakeBackend(first_bias=0.8), TEMPLATE, sample_pairs=4, progress=False)
    full = label_pairs(pairs, FakeBackend(first_bias=0.8), TEMPLATE, progress=False)
    prior = labels["debiasing"][0]["prior"]
    expected = debiasing.apply_prior(full, prior, False, "pride")
    rest = ~labels["pride_sample"].to_numpy()
    assert labels["p"][rest].tolist() == pytest.approx(expected["p_first_order"][rest].tolist())
    assert labels["p"][~rest].tolist() == pytest.approx(expected["p"][~rest].tolist())


def test_pride_resumes_from_its_journals_and_writes_the_corrected_table(tmp_path):
    pairs = make_pairs(10)
    out = tmp_path / "labels.jsonl"
    first = label_pairs_pride(pairs, FakeBackend(first_bias=1.0), TEMPLATE, sample_pairs=3, out=out, progress=False)
    assert all(path.exists() for path in journal_paths(out))
    again = FakeBackend(first_bias=1.0)
    second = label_pairs_pride(pairs, again, TEMPLATE, sample_pairs=3, out=out, progress=False)
    assert again.prompts_seen == []
    written = read_labels(out)
    assert written["p"].tolist() == pytest.approx(first["p"].tolist()) == second["p"].tolist()
    assert written["p_swapped_order"].isna().sum() == 7  # null in JSON, not NaN
    assert b"NaN" not in out.read_bytes()


def test_pride_refuses_an_empty_sample_and_a_shard():
    with pytest.raises(ValueError, match="at least one pair"):
        label_pairs_pride(make_pairs(4), FakeBackend(), TEMPLATE, sample_pairs=0, progress=False)
    with pytest.raises(ValueError, match="shard"):
        label_pairs_pride(make_pairs(4), FakeBackend(), TEMPLATE, sample_pairs=2, progress=False, shard=(0, 2))
