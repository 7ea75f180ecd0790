"""Labeling bookkeeping with a deterministic fake engine: swap mapping, resume, output files, report."""

import json

import numpy as np
import pandas as pd
import pytest
from fakes import FakeBackend
from pair_prompts import build_prompts

from rlaif.analysis.report import summarize
from rlaif.label_store import StoreError, read_labels
from rlaif.labeler import label_pairs
from rlaif.pairs import TIE, PreferencePair
from rlaif.soft_labels import candidate_probs
from rlaif.templates import PromptTemplate

TEMPLATE = PromptTemplate("instruction")


def make_pairs(n=10):
    pairs = []
    for i in range(n):
        good_first = i % 3 != 0
        r1, r2 = ("GOOD answer", "meh answer") if good_first else ("meh answer", "GOOD answer")
        correct = 1 if good_first else 2
        human = (correct, TIE, None, correct, 3 - correct)[i % 5]
        pairs.append(PreferencePair(f"p{i}", f"question {i}", r1, r2, human, "t"))
    return pairs


def test_rows_map_both_orders_back_to_response_1():
    pairs = make_pairs(6)
    backend = FakeBackend()
    labels = label_pairs(pairs, backend, TEMPLATE, progress=False)
    assert labels["id"].tolist() == [p.id for p in pairs]
    for pair, row in zip(pairs, labels.itertuples()):
        first = candidate_probs(np.array([row.logprobs_first_order]))[0]
        swapped = candidate_probs(np.array([row.logprobs_swapped_order]))[0]
        assert row.p_first_order == pytest.approx(first[0])
        assert row.p_swapped_order == pytest.approx(swapped[1])  # label "2" names response 1 when swapped
        assert row.p == pytest.approx((row.p_first_order + row.p_swapped_order) / 2)
        assert row.ai_choice == (1 if "GOOD" in pair.response_1 else 2)
        assert row.mass_first_order == pytest.approx(0.5) and row.candidate_mass == pytest.approx(0.5)
    # the swapped order really showed response 2 first
    first_prompt, swapped_prompt = build_prompts(pairs[0], TEMPLATE, backend, chat_template=False)
    assert first_prompt.index(pairs[0].response_1) < first_prompt.index(pairs[0].response_2)
    assert swapped_prompt.index(pairs[0].response_2) < swapped_prompt.index(pairs[0].response_1)


def test_labeling_the_swapped_pair_mirrors_the_swapped_order():
    pair = make_pairs(1)[0]
    mirror = PreferencePair("m", pair.context, pair.response_2, pair.response_1)
    backend = FakeBackend()
    a = label_pairs([pair], backend, TEMPLATE, progress=False).iloc[0]
    b = label_pairs([mirror], backend, TEMPLATE, progress=False).iloc[0]
    assert b.p_first_order == pytest.approx(1 - a.p_swapped_order)
    assert b.p == pytest.approx(1 - a.p)


def test_chat_template_wraps_message_and_keeps_ending_last():
    backend = FakeBackend()
    first, _ = build_prompts(make_pairs(1)[0], TEMPLATE, backend, chat_template=True)
    assert first.startswith("<user>") and first.endswith("</user><assistant>Better Output=")


def test_resume_skips_done_pairs_and_matches_an_uninterrupted_run(tmp_path):
    pairs = make_pairs(10)
    full = label_pairs(pairs, FakeBackend(), TEMPLATE, out=tmp_path / "full.jsonl", progress=False)
    out = tmp_path / "part.jsonl"
    label_pairs(pairs[:4], FakeBackend(), TEMPLATE, out=out, progress=False)
    backend = FakeBackend()
    resumed = label_pairs(pairs, backend, TEMPLATE, out=out, pairs_per_step=3, progress=False)
    assert len(backend.prompts_seen) == 2 * 6  # only the 6 new pairs, both orders
    pd.testing.assert_frame_equal(resumed, full)
    assert (tmp_path / "full.jsonl").read_bytes() == out.read_bytes()


def test_truncated_last_line_is_repaired_on_resume(tmp_path):
    pairs = make_pairs(6)
    out = tmp_path / "labels.jsonl"
    label_pairs(pairs[:3], FakeBackend(), TEMPLATE, out=out, progress=False)
    out.write_bytes(out.read_bytes() + b'{"id": "p3", "p": 0.')  # killed mid-write
    resumed = label_pairs(pairs, FakeBackend(), TEMPLATE, out=out, progress=False)
    lines = out.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [p.id for p in pairs]
    assert resumed["id"].tolist() == [p.id for p in pairs]


def test_resume_into_another_runs_file_is_refused_and_fresh_overwrites(tmp_path):
    pairs = make_pairs(4)
    out = tmp_path / "labels.jsonl"
    label_pairs(pairs, FakeBackend(name="a"), TEMPLATE, out=out, progress=False)
    before = out.read_bytes()
    with pytest.raises(StoreError, match="another run.*--fresh"):
        label_pairs(pairs, FakeBackend(name="b"), TEMPLATE, out=out, progress=False)
    assert out.read_bytes() == before  # nothing lost
    with pytest.raises(StoreError, match="another run"):
        label_pairs(pairs, FakeBackend(name="a"), PromptTemplate("instruction", "detailed"), out=out, progress=False)
    fresh = label_pairs(pairs, FakeBackend(name="b"), TEMPLATE, out=out, fresh=True, progress=False)
    assert set(read_labels(out)["model"]) == {"b"} and len(fresh) == 4


def test_parquet_output_round_trips(tmp_path):
    pairs = make_pairs(5)
    jsonl = label_pairs(pairs, FakeBackend(), TEMPLATE, out=tmp_path / "l.jsonl", progress=False)
    label_pairs(pairs, FakeBackend(), TEMPLATE, out=tmp_path / "l.parquet", progress=False)
    parquet = read_labels(tmp_path / "l.parquet")
    assert not (tmp_path / "l.parquet.partial.jsonl").exists()
    assert parquet["id"].tolist() == jsonl["id"].tolist()
    assert np.allclose(parquet["p"], jsonl["p"])
    assert parquet["metadata"].tolist() == jsonl["metadata"].tolist()


def test_duplicate_ids_are_refused():
    pair = make_pairs(1)[0]
    with pytest.raises(ValueError, match="unique.*p0"):
        label_pairs([pair, pair], FakeBackend(), TEMPLATE, progress=False)


def test_report_numbers_equal_a_recomputation_from_rows():
    labels = label_pairs(make_pairs(20), FakeBackend(first_bias=3.0), TEMPLATE, progress=False)
    summary = summarize(labels)
    human = labels["human_choice"]
    scored = labels[human.notna() & (human != TIE)]
    assert summary["pairs"] == 20
    assert summary["human_ties"] == int((human == TIE).sum()) > 0
    assert summary["pairs_with_human_label"] == int(human.notna().sum()) < 20
    assert summary["alignment"] == pytest.approx((scored["ai_choice"] == scored["human_choice"]).mean())
    same = labels["position_first_order"] == labels["position_swapped_order"]
    # a strong first-position pull: each order prefers the response shown first
    assert summary["position_bias"]["same_position_both_orders"] == pytest.approx(same.mean())
    assert summary["position_bias"]["same_first"] == pytest.approx(
        ((labels["position_first_order"] == 1) & (labels["position_swapped_order"] == 1)).mean())
    assert summary["position_bias"]["same_first"] > 0.9
    assert summary["mean_candidate_mass"] == pytest.approx(0.5)


def test_report_on_hand_made_rows():
    rows = pd.DataFrame({
        "ai_choice": [1, 2, 1, 2, 1], "human_choice": [1, 1, TIE, None, 1],
        "position_first_order": [1, 1, 2, 1, 2], "position_swapped_order": [1, 2, 2, 2, 1],
        "p_first_order": [0.9, 0.6, 0.4, 0.7, 0.3], "p_swapped_order": [0.1, 0.2, 0.6, 0.2, 0.6],
        "candidate_mass": [0.2, 0.4, 0.6, 0.8, 1.0], "p": [0.5] * 5,
    })
    summary = summarize(rows)
    assert summary["pairs_scored"] == 3 and summary["human_ties"] == 1
    assert summary["alignment"] == pytest.approx(2 / 3)
    assert summary["position_bias"] == pytest.approx(
        {"same_position_both_orders": 2 / 5, "same_first": 1 / 5, "same_second": 1 / 5, "pairs_both_orders": 5})
    assert summary["mean_candidate_mass"] == pytest.approx(0.6)


def test_labels_become_a_datasets_dataset():
    from rlaif.label_store import to_dataset

    labels = label_pairs(make_pairs(4), FakeBackend(), TEMPLATE, progress=False)
    dataset = to_dataset(labels)
    assert dataset.num_rows == 4 and dataset["id"] == labels["id"].tolist()
    assert dataset["p"] == pytest.approx(labels["p"].tolist())
    assert [json.loads(m) for m in dataset["metadata"]] == labels["metadata"].tolist()


def test_a_smaller_rerun_keeps_the_rows_it_does_not_ask_for(tmp_path):
    pairs = make_pairs(6)
    out = tmp_path / "labels.jsonl"
    label_pairs(pairs, FakeBackend(), TEMPLATE, out=out, progress=False)
    backend = FakeBackend()
    subset = label_pairs(pairs[:2], backend, TEMPLATE, out=out, progress=False)
    assert subset["id"].tolist() == ["p0", "p1"] and backend.calls == 0
    assert read_labels(out)["id"].tolist() == [p.id for p in pairs]  # nothing lost
