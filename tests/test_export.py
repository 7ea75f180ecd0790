"""rlaif export / rlaif.export: a labels table joined back to its pairs, as TRL's preference columns."""

import json
import math

import pandas as pd
import pytest
from datasets import load_from_disk
from fakes import FakeBackend

from rlaif.cli import main
from rlaif.export import preference_dataset, preference_table, transcript_messages
from rlaif.label_store import StoreError
from rlaif.labeler import label_pairs
from rlaif.labels_table import pointwise_row
from rlaif.pairs import TIE, PreferencePair
from rlaif.templates import PromptTemplate

HH = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: How do I boil an egg?\n\nAssistant:"
PAIRS = [
    PreferencePair("a", HH, " Put it in boiling water.", " No.", 1),
    PreferencePair("b", "Q2", "r1 b", "r2 b", 2),
    PreferencePair("c", "Q3", "r1 c", "r2 c", 1),
    PreferencePair("d", "Q4", "r1 d", "r2 d", TIE),
    PreferencePair("e", "Q5", "r1 e", "r2 e", None),
]
#: The AI's P(response 1 preferred) per pair: agrees on a, disagrees on b, exact tie on c, decides d and e.
P = {"a": 0.8, "b": 0.9, "c": 0.5, "d": 0.3, "e": 0.55}


def labels_for(pairs, p=P):
    """A labels table with the given p, built the way reward-model labels are (sigmoid of a difference)."""
    rows = [pointwise_row(pair, {"model": "m", "run_id": "r"}, math.log(p[pair.id] / (1 - p[pair.id])), 0.0,
                          names=("score_1", "score_2")) for pair in pairs]
    return pd.DataFrame(rows)


def test_chosen_is_the_ai_preferred_response_and_ties_are_dropped():
    table = preference_table(labels_for(PAIRS), PAIRS)
    assert table["id"].tolist() == ["a", "b", "d", "e"]
    assert table["chosen"].tolist() == [" Put it in boiling water.", "r1 b", "r2 d", "r1 e"]
    assert table["rejected"].tolist() == [" No.", "r2 b", "r1 d", "r2 e"]
    assert table["p_chosen"].tolist() == pytest.approx([0.8, 0.9, 0.7, 0.55])
    assert table["ai_choice"].tolist() == [1, 1, 2, 1]
    assert table["human_choice"].tolist()[:2] == [1, 2] and table["human_choice"].isna().tolist() == [
        False, False, True, True]
    assert table["prompt"].iloc[0] == HH


def test_human_labels_filters_and_agreement():
    labels = labels_for(PAIRS)
    human = preference_table(labels, PAIRS, label="human")
    assert human["id"].tolist() == ["a", "b", "c"]  # the tie and the unlabeled pair have no human preference
    assert human["chosen"].tolist() == [" Put it in boiling water.", "r2 b", "r1 c"]
    assert human["p_chosen"].tolist() == pytest.approx([0.8, 0.1, 0.5])  # the AI's p for the human's choice
    assert preference_table(labels, PAIRS, agreement="agree")["id"].tolist() == ["a"]
    assert preference_table(labels, PAIRS, agreement="disagree")["id"].tolist() == ["b"]
    assert preference_table(labels, PAIRS, min_confidence=0.25)["id"].tolist() == ["a", "b"]
    assert preference_table(labels, PAIRS, label="human", min_confidence=0.25)["id"].tolist() == ["a", "b"]
    with pytest.raises(ValueError, match="agreement"):
        preference_table(labels, PAIRS, agreement="sometimes")


def test_labels_from_other_data_are_refused_naming_the_row():
    labels = labels_for(PAIRS)
    changed = [PreferencePair("a", HH, " Put it in cold water.", " No.", 1), *PAIRS[1:]]
    with pytest.raises(StoreError, match=r"row 0 \(id 'a'\).*pair_hash"):
        preference_table(labels, changed)
    with pytest.raises(StoreError, match=r"row 4 \(id 'e'\) has no pair"):
        preference_table(labels, PAIRS[:4])


def test_conversational_form_splits_hh_transcripts_into_turns():
    assert transcript_messages(HH) == [{"role": "user", "content": "Hi there"},
                                       {"role": "assistant", "content": "Hello!"},
                                       {"role": "user", "content": "How do I boil an egg?"}]
    assert transcript_messages("Summarize: Human: is a word here") == [
        {"role": "user", "content": "Summarize: Human: is a word here"}]
    table = preference_table(labels_for(PAIRS), PAIRS, conversational=True)
    assert table["prompt"].iloc[0][-1] == {"role": "user", "content": "How do I boil an egg?"}
    assert table["chosen"].iloc[0] == [{"role": "assistant", "content": "Put it in boiling water."}]
    assert table["prompt"].iloc[1] == [{"role": "user", "content": "Q2"}]


def test_dataset_round_trips_with_nullable_labels(tmp_path):
    dataset = preference_dataset(labels_for(PAIRS), PAIRS)
    assert dataset.column_names == ["prompt", "chosen", "rejected", "p_chosen", "ai_choice", "human_choice", "id",
                                    "task"]
    dataset.save_to_disk(tmp_path / "ds")
    back = load_from_disk(tmp_path / "ds")
    assert back["human_choice"] == [1, 2, None, None] and back["ai_choice"] == [1, 1, 2, 1]


def test_export_from_the_command_line_joins_a_labeling_run_to_its_data(tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    rows = [{"id": f"p{i}", "context": f"question {i}", "response_1": "GOOD answer" if i % 2 else "bad answer",
             "response_2": "bad answer" if i % 2 else "GOOD answer", "label": 1 if i % 2 else 2} for i in range(6)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    from rlaif.loaders import load_pairs

    pairs = load_pairs(str(data), "jsonl")
    label_pairs(pairs, FakeBackend(), PromptTemplate("instruction"), out=tmp_path / "labels.jsonl", progress=False)
    out = tmp_path / "preference"
    assert main(["export", str(tmp_path / "labels.jsonl"), "--data", str(data), "--format", "jsonl",
                 "--out", str(out), "--agreement", "agree"]) == 0
    dataset = load_from_disk(out)
    assert len(dataset) == 6  # the fake labeler prefers the GOOD response, as the people did
    assert all(chosen.startswith("GOOD") for chosen in dataset["chosen"])
    assert all(p > 0.5 for p in dataset["p_chosen"])
    assert main(["export", str(tmp_path / "labels.jsonl"), "--data", str(data), "--format", "jsonl",
                 "--out", str(tmp_path / "none"), "--agreement", "disagree"]) == 2
    assert "no pair of" in capsys.readouterr().err and not (tmp_path / "none").exists()
