"""The prompting techniques: exemplar choice, rendered variants (golden files), CoT, ensembles, direct scores."""

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fakes import FakeBackend

from rlaif.analysis.report import summarize
from rlaif.direct_scores import (
    SCORE_LABELS,
    DirectScorer,
    expected_score,
    score_distribution,
    score_pairs,
    score_to_reward,
)
from rlaif.labeler import label_pairs
from rlaif.pairs import PreferencePair
from rlaif.prompting import PairPrompts, Prompting, choose_exemplars
from rlaif.soft_labels import candidate_probs
from rlaif.templates import PromptTemplate, TemplateError

GOLDEN = Path(__file__).parent / "golden"
PAIR = PreferencePair("sample-1", "Name a primary colour.", "GOOD: red", "meh: cheese", 1, "t")


def pool(n1=2, n2=2):
    items = [{"id": f"a{i}", "context": f"ctx a{i}", "response_1": "x", "response_2": "y", "label": 1, "rationale": "r"}
             for i in range(n1)]
    return items + [{"id": f"b{i}", "context": f"ctx b{i}", "response_1": "x", "response_2": "y", "label": 2,
                     "rationale": "r"} for i in range(n2)]


def test_exemplars_balance_positions_and_never_use_the_sample():
    for shots in (1, 2, 3, 4):
        for k in range(20):
            pair = PreferencePair(f"p{k}", "q", "a", "b")
            chosen = choose_exemplars(pool(), shots, pair, random_order=False, seed=0)
            positions = [e["preferred_position"] for e in chosen]
            assert len(chosen) == shots and abs(positions.count(1) - positions.count(2)) <= 1
            assert all(positions[i] != positions[i + 1] for i in range(shots - 1))  # alternating
    firsts = {choose_exemplars(pool(), 1, PreferencePair(f"p{k}", "q", "a", "b"),
                               random_order=False, seed=0)[0]["label"]
              for k in range(20)}
    assert firsts == {1, 2}  # which position comes first is a coin per pair
    itself = PreferencePair("a0", "anything", "a", "b")
    assert "a0" not in [e["id"] for e in choose_exemplars(pool(), 3, itself, random_order=False, seed=0)]
    same_content = PreferencePair("other", "ctx b1", "y", "x")
    assert "b1" not in [e["id"] for e in choose_exemplars(pool(), 3, same_content, random_order=True, seed=0)]
    with pytest.raises(TemplateError, match="4-shot"):
        choose_exemplars(pool(), 4, itself, random_order=False, seed=0)


def test_fixed_order_follows_the_file_and_random_order_is_seeded_per_pair():
    big = pool(5, 5)
    fixed = [e["id"] for e in choose_exemplars(big, 4, PAIR, random_order=False, seed=0)]
    assert sorted(fixed) == ["a0", "a1", "b0", "b1"]
    draws = {tuple(e["id"] for e in choose_exemplars(big, 4, PreferencePair(f"p{k}", "q", "a", "b"),
                                                       random_order=True, seed=0)) for k in range(10)}
    assert len(draws) > 3
    again = [e["id"] for e in choose_exemplars(big, 4, PAIR, random_order=True, seed=0)]
    assert again == [e["id"] for e in choose_exemplars(big, 4, PAIR, random_order=True, seed=0)]


VARIANTS = {
    "instruction_base": ("instruction", Prompting()),
    "instruction_detailed": ("instruction", Prompting(preambles=("detailed",))),
    "instruction_2shot": ("instruction", Prompting(shots=2)),
    "harmless_1shot": ("harmless", Prompting(shots=1)),
    "summarization_cot": ("summarization", Prompting(cot=True, shots=1)),
    "helpful_principle_1": ("helpful", Prompting(preambles=("principle_1",))),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_rendered_variants_match_golden_files(name):
    task, prompting = VARIANTS[name]
    builder = PairPrompts(PromptTemplate(task), FakeBackend(), False, prompting)
    order, preamble, message, ending = builder.first_step(PAIR)[0]
    text = builder.rationale_prompt(message) if prompting.cot else builder.label_prompt(message, ending)
    if prompting.cot:
        text += "\n---- step 2 ----\n" + builder.label_prompt(message, ending, " A short rationale. ")
    golden = GOLDEN / f"{name}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_score_prompt_matches_golden_file():
    text = PromptTemplate("helpful").render_score("Human: hi", "Hello! How can I help?").text
    golden = GOLDEN / "helpful_score.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text() and text.endswith("Score (1-10)=")


def pairs(n=4):
    return [PreferencePair(f"p{i}", f"q{i}", "GOOD a" if i % 2 else "meh b", "meh b" if i % 2 else "GOOD a",
                           1 if i % 2 else 2) for i in range(n)]


def test_two_step_cot_generates_a_rationale_per_order_and_reads_the_label_after_it():
    fake = FakeBackend()
    labels = label_pairs(pairs(2), fake, PromptTemplate("instruction"),
                         prompting=Prompting(cot=True, cot_max_tokens=32), progress=False)
    [call] = fake.generated
    assert len(call["prompts"]) == 4 and call["max_new_tokens"] == 32 and call["temperature"] == 0.0
    assert all(p.endswith("Rationale:") for p in call["prompts"])
    assert "Better Output=" in call["stop"] and "\n\n" in call["stop"]
    assert len(fake.prompts_seen) == 4
    for prompt in fake.prompts_seen:
        assert "Rationale: thought 0 about" in prompt and prompt.endswith("chars.\nBetter Output=")
    row = labels.iloc[0]
    assert len(row["rationales_first_order"]) == 1 and len(row["rationales_swapped_order"]) == 1
    assert row["prompting"]["cot"] is True


def test_self_consistency_averages_label_probabilities_over_sampled_rationales():
    fake = FakeBackend()
    prompting = Prompting(cot=True, cot_samples=3, cot_temperature=0.7)
    row = label_pairs(pairs(1), fake, PromptTemplate("instruction"), prompting=prompting, progress=False).iloc[0]
    assert fake.generated[0]["n"] == 3 and len(fake.prompts_seen) == 6
    assert len(row["rationales_first_order"]) == 3
    first_three = fake.label_logprobs(fake.prompts_seen[:3], ["1", "2"])
    mixture = np.exp(first_three).mean(axis=0)
    assert row["p_first_order"] == pytest.approx(mixture[0] / mixture.sum())
    with pytest.raises(ValueError, match="cot_temperature"):
        Prompting(cot=True, cot_samples=3)


def test_clamping_bounds_each_order():
    labels = label_pairs(pairs(4), FakeBackend(first_bias=4.0), PromptTemplate("instruction"),
                         prompting=Prompting(clamp=(0.4, 0.6)), progress=False)
    for row in labels.itertuples():
        assert 0.4 - 1e-12 <= row.p_first_order <= 0.6 + 1e-12 and 0.4 - 1e-12 <= row.p_swapped_order <= 0.6 + 1e-12
    assert labels["p_first_order"].max() == pytest.approx(0.6)  # the fake's strong pull really was clamped


def test_ensembles_average_label_distributions_with_equal_weight():
    """A prompt where the model barely answers must not count less than one where it answers loudly."""
    from rlaif.labeler import _combine

    loud = np.log([0.45, 0.45])        # mass 0.9, P(label 1) 0.5
    quiet = np.log([0.001, 0.099])     # mass 0.1, P(label 1) 0.01
    combined = _combine(np.array([loud, quiet]), clamp=None)
    assert candidate_probs(combined[None])[0, 0] == pytest.approx((0.5 + 0.01) / 2)
    assert np.exp(combined).sum() == pytest.approx((0.9 + 0.1) / 2)
    clamped = _combine(np.array([loud, quiet]), clamp=(0.4, 0.6))
    assert candidate_probs(clamped[None])[0, 0] == pytest.approx((0.5 + 0.4) / 2)  # clamped per prompt
    with pytest.raises(ValueError, match="clamp"):
        Prompting(clamp=(0.3, 0.6))


def test_the_templates_own_preamble_is_the_default():
    fake = FakeBackend()
    labels = label_pairs(pairs(1), fake, PromptTemplate("helpful", "detailed"), prompting=Prompting(shots=1),
                         progress=False)
    assert labels.iloc[0]["preambles"] == ["detailed"] and "Relevance:" in fake.prompts_seen[0]


def test_preamble_ensemble_average_and_sample():
    template = PromptTemplate("helpful")
    names = ("base", "principle_1", "principle_2")
    fake = FakeBackend()
    averaged = label_pairs(pairs(2), fake, template, prompting=Prompting(preambles=names), progress=False)
    assert len(fake.prompts_seen) == 2 * 2 * 3 and averaged.iloc[0]["preambles"] == sorted(names)
    fake = FakeBackend()
    sampled = label_pairs(pairs(6), fake, template, prompting=Prompting(preambles=names, ensemble="sample", seed=3),
                          progress=False)
    assert len(fake.prompts_seen) == 2 * 6
    chosen = [row[0] for row in sampled["preambles"]]
    assert len(set(chosen)) > 1
    again = label_pairs(pairs(6), FakeBackend(), template,
                        prompting=Prompting(preambles=names, ensemble="sample", seed=3), progress=False)
    assert [row[0] for row in again["preambles"]] == chosen
    with pytest.raises(TemplateError, match="no preamble"):
        label_pairs(pairs(1), FakeBackend(), template, prompting=Prompting(preambles=("nope",)), progress=False)


def test_score_distribution_by_hand():
    # digits split: P("1") = 0.35 includes "10" (0.10) and "15" (0.05): P(1 and stop) = 0.20
    probs = np.array([[0.35, 0.10, 0, 0, 0, 0, 0, 0, 0, 0.10] + [0, 0, 0, 0, 0.05, 0, 0, 0, 0]])
    distribution, mass = score_distribution(np.log(probs + 1e-300))
    # then 0.10 on 2 and 0.10 on 10, renormalized over 0.40
    assert distribution[0, [0, 1, 9]] == pytest.approx([0.5, 0.25, 0.25])
    assert mass[0] == pytest.approx(0.40)
    # "10".."19" as tokens of their own: the token "1" is already a 1 and stop
    separate, mass = score_distribution(np.log(probs + 1e-300), one_is_a_prefix=False)
    assert separate[0, [0, 1, 9]] == pytest.approx(np.array([0.35, 0.10, 0.10]) / 0.55)
    assert expected_score(distribution)[0] == pytest.approx(0.5 * 1 + 0.25 * 2 + 0.25 * 10)
    assert score_to_reward(np.array([1.0, 5.5, 10.0])) == pytest.approx([-1.0, 0.0, 1.0])


class ScoreFake(FakeBackend):
    """Puts its score mass on 9 for responses containing GOOD, on 2 otherwise."""

    def label_logprobs(self, prompts, labels):
        assert tuple(labels[:10]) == SCORE_LABELS and len(labels) == 19
        self.prompts_seen.extend(prompts)
        rows = np.full((len(prompts), 19), math.log(0.001))
        for i, prompt in enumerate(prompts):
            rows[i, 8 if "GOOD" in prompt.split("Output:")[-1] else 1] = math.log(0.5)
        return rows


def test_direct_scorer_is_a_trl_style_reward_function():
    scorer = DirectScorer(ScoreFake(), PromptTemplate("instruction"))
    rewards = scorer(prompts=["Say hi", [{"role": "user", "content": "Say hi"}]],
                     completions=["GOOD hello", [{"role": "assistant", "content": "meh"}]], extra_column=[1, 2])
    assert len(rewards) == 2 and rewards[0] > 0.5 > 0 > rewards[1]
    assert scorer.__name__ == "direct_rlaif_instruction"
    with pytest.raises(TypeError):
        scorer(prompts=[3], completions=["x"])


def test_direct_scores_as_a_pairwise_labeler_in_the_same_report():
    labels = score_pairs(pairs(4), DirectScorer(ScoreFake(), PromptTemplate("instruction")), progress=False)
    assert (labels["ai_choice"] == labels["human_choice"]).all()
    for row in labels.itertuples():
        assert row.p == pytest.approx(1 / (1 + math.exp(-(row.score_1 - row.score_2))))
    summary = summarize(labels)
    assert summary["alignment"] == 1.0 and summary["position_bias"]["same_position_both_orders"] == 0.0


def test_direct_scoring_fits_long_contexts_and_gives_nan_when_the_response_cannot_fit():
    fake = ScoreFake(max_prompt_tokens=90)
    scorer = DirectScorer(fake, PromptTemplate("instruction"))
    long_context = " ".join(f"w{i}" for i in range(300))
    result = scorer.score([long_context, "q"], ["GOOD answer", "word " * 200])
    assert result["score"][0] > 8 and math.isnan(result["score"][1])
    assert len(fake.prompts_seen) == 1 and len(fake.prompts_seen[0].split()) <= 88
    assert "w299" in fake.prompts_seen[0] and "w0 " not in fake.prompts_seen[0]
    labels = score_pairs([PreferencePair("x", "q", "word " * 200, "GOOD", 2)], scorer, progress=False)
    assert labels.iloc[0]["flags"] == ["nonfinite_logprobs"] and pd.isna(labels.iloc[0]["p"])
