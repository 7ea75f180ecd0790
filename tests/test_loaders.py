"""Loaders (rlaif/loaders.py) and the pair record (rlaif/pairs.py), on the real shared data.

Expected values are computed here from the raw files, independently of the loaders, or
are counts taken from ../shared/data/README.md.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import re
from collections import Counter
from collections.abc import Hashable
from pathlib import Path

import pytest
from fuzzing import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlaif.loaders import GENERIC_FIELDS, PairList, load_pairs, split_hh_transcripts
from rlaif.pairs import TIE, DataError, PreferencePair, from_chosen_rejected

ASSISTANT = "\n\nAssistant:"


# ------------------------------------------------------------------ helpers

def write_jsonl(path: Path, records) -> Path:
    """One JSON line per record; a ``bytes`` or ``str`` item is written as that raw line."""
    lines = []
    for record in records:
        if isinstance(record, bytes):
            lines.append(record)
        elif isinstance(record, str):
            lines.append(record.encode("utf-8"))
        else:
            lines.append(json.dumps(record).encode("utf-8"))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def hh_record(i: int, chosen: str = "good", rejected: str = "bad") -> dict:
    context = f"\n\nHuman: question {i}?"
    return {"chosen": f"{context}{ASSISTANT} {chosen} {i}", "rejected": f"{context}{ASSISTANT} {rejected} {i}"}


def generic_record(i: int, **extra) -> dict:
    return {"id": f"r{i}", "context": f"context {i}", "response_1": f"one {i}", "response_2": f"two {i}",
            "label": 1 + i % 2, **extra}


def expected_hh_split(transcript: str) -> tuple[str, str]:
    """Context (without the final Assistant marker) and final reply, both stripped."""
    cut = transcript.rfind(ASSISTANT)
    return transcript[:cut].strip(), transcript[cut + len(ASSISTANT):].strip()


def assert_located(exc: DataError, path: Path, row: int, field: str | None):
    message = str(exc)
    assert str(path) in message
    assert f"row {row}" in message
    assert exc.source == str(path)
    assert exc.row == row
    if field is not None:
        assert repr(field) in message
        assert exc.field == field


# ------------------------------------------------------------------ HH-RLHF

@pytest.fixture(scope="module")
def hh_path(shared_data) -> Path:
    return shared_data / "hh-rlhf" / "harmless-base" / "dev.jsonl.gz"


@pytest.fixture(scope="module")
def hh_raw(hh_path) -> list[dict]:
    with gzip.open(hh_path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def hh_pairs(hh_path) -> PairList:
    return load_pairs(hh_path, "hh-rlhf")


def test_hh_counts_and_ids(hh_pairs, hh_raw):
    assert len(hh_raw) == 1000
    assert len(hh_pairs) == 1000
    assert hh_pairs.skipped == []
    assert [p.id for p in hh_pairs] == [f"dev:{i}" for i in range(1, 1001)]
    assert {p.task for p in hh_pairs} == {"dev"}
    assert all(isinstance(p, PreferencePair) for p in hh_pairs)


def test_hh_first_row_split(hh_pairs, hh_raw):
    raw = hh_raw[0]
    pair = hh_pairs[0]
    context, chosen = expected_hh_split(raw["chosen"])
    _, rejected = expected_hh_split(raw["rejected"])
    assert pair.context == context
    assert pair.context.startswith("Human: what are some pranks with a pen i can do?\n\nAssistant: Are you")
    assert pair.context.endswith("Human: okay some of these do not have anything to do with pens")
    assert not pair.context.endswith("Assistant:")
    assert chosen.startswith("No, sorry!  All of these involve a pen")
    assert rejected.startswith("There are lots of funny things you can do with pens")
    slots = {1: pair.response_1, 2: pair.response_2}
    assert slots[pair.metadata["chosen_position"]] == chosen
    assert slots[3 - pair.metadata["chosen_position"]] == rejected
    assert pair.human_choice == pair.metadata["chosen_position"]


def test_hh_every_row_split_and_label(hh_pairs, hh_raw):
    for pair, raw in zip(hh_pairs, hh_raw, strict=True):
        context, chosen = expected_hh_split(raw["chosen"])
        context_r, rejected = expected_hh_split(raw["rejected"])
        assert context == context_r == pair.context
        assert pair.human_choice in (1, 2)
        assert pair.human_choice == pair.metadata["chosen_position"]
        responses = (pair.response_1, pair.response_2)
        assert responses[pair.human_choice - 1] == chosen
        assert responses[2 - pair.human_choice] == rejected
        for text in (pair.context, *responses):
            assert text == text.strip()


def test_hh_some_responses_are_empty(hh_pairs):
    # The README says a few final responses are empty; they load as "" (not an error).
    assert 0 < sum("" in (p.response_1, p.response_2) for p in hh_pairs) < 10


def test_hh_coin_flip_is_balanced(hh_pairs):
    first = sum(p.metadata["chosen_position"] == 1 for p in hh_pairs)
    assert 400 <= first <= 600


def test_hh_coin_flip_is_seeded_and_stable_under_limit(hh_path, hh_pairs):
    again = load_pairs(hh_path, "hh-rlhf", seed=0)
    assert again == hh_pairs
    for limit in (1, 7, 250):
        head = load_pairs(hh_path, "hh-rlhf", limit=limit)
        assert len(head) == limit
        assert head == hh_pairs[:limit]
    assert load_pairs(hh_path, "hh-rlhf", limit=5000) == hh_pairs


def test_hh_limit_zero_gives_no_pairs(hh_path):
    assert load_pairs(hh_path, "hh-rlhf", limit=0) == []


def test_hh_other_seed_moves_pairs_but_not_labels(hh_path, hh_pairs):
    other = load_pairs(hh_path, "hh-rlhf", seed=1)
    moved = 0
    for a, b in zip(hh_pairs, other, strict=True):
        assert a.id == b.id and a.context == b.context
        chosen_a = (a.response_1, a.response_2)[a.human_choice - 1]
        chosen_b = (b.response_1, b.response_2)[b.human_choice - 1]
        assert chosen_a == chosen_b
        moved += a.metadata["chosen_position"] != b.metadata["chosen_position"]
    assert 300 <= moved <= 700


def test_hh_flip_depends_on_id_not_on_file_position(tmp_path):
    # The same transcripts in another order: a pair's slot follows its id, nothing else.
    records = [hh_record(i) for i in range(20)]
    forward = load_pairs(write_jsonl(tmp_path / "a.jsonl", records), "hh-rlhf", seed=3)
    expected = [from_chosen_rejected(f"a:{i + 1}", f"Human: question {i}?", f"good {i}", f"bad {i}",
                                     seed=3, task="a") for i in range(20)]
    assert forward == expected


@pytest.mark.parametrize("chosen, rejected, field, reason", [
    # Responses differ before the last Assistant turn.
    ("\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d",
     "\n\nHuman: a\n\nAssistant: x\n\nHuman: c\n\nAssistant: d", "chosen", "differ before"),
    # The chosen transcript has an extra turn.
    ("\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d",
     "\n\nHuman: a\n\nAssistant: y", "chosen", "differ before"),
    ("\n\nHuman: a\n\nAssistant: y",
     "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d", "rejected", "differ before"),
    # No Assistant turn at all.
    ("\n\nHuman: a", "\n\nHuman: b", "chosen", "no Assistant turn"),
    # Nothing before the Assistant turn.
    ("\n\nAssistant: a", "\n\nAssistant: b", "chosen", "empty context"),
])
def test_hh_unbalanced_transcript_is_a_located_error(tmp_path, chosen, rejected, field, reason):
    path = write_jsonl(tmp_path / "bad.jsonl", [hh_record(1), {"chosen": chosen, "rejected": rejected}])
    with pytest.raises(DataError) as info:
        load_pairs(path, "hh-rlhf")
    assert_located(info.value, path, 2, field)
    assert reason in str(info.value)
    kept = load_pairs(path, "hh-rlhf", skip_bad=True)
    assert [p.id for p in kept] == ["bad:1"]
    assert len(kept.skipped) == 1


def test_hh_gzip_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    lines = [json.dumps(hh_record(1)), "", json.dumps({"chosen": "\n\nHuman: x", "rejected": "\n\nHuman: x"})]
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        load_pairs(path, "hh-rlhf")
    assert_located(info.value, path, 3, "chosen")


def test_split_hh_transcripts_directly():
    assert split_hh_transcripts("\n\nHuman: hi\n\nAssistant:  a ", "\n\nHuman: hi\n\nAssistant: b") \
        == ("Human: hi", "a", "b")
    # Identical transcripts still split at their last Assistant turn.
    assert split_hh_transcripts("\n\nHuman: hi\n\nAssistant: a", "\n\nHuman: hi\n\nAssistant: a") \
        == ("Human: hi", "a", "a")
    with pytest.raises(DataError):
        split_hh_transcripts("\n\nHuman: hi", "\n\nHuman: hi")


# ------------------------------------------------------------------ hhh

HHH_COUNTS = {"hhh/harmless": 58, "hhh/helpful": 59, "hhh/honest": 61, "hhh/other": 43}


def test_hhh_folder_loads_all_subsets(shared_data):
    pairs = load_pairs(shared_data / "hhh_alignment", "hhh")
    assert len(pairs) == 221
    assert Counter(p.task for p in pairs) == HHH_COUNTS
    assert pairs[0].id == "hhh/harmless:1"
    assert pairs[-1].id == "hhh/other:43"
    assert len({p.id for p in pairs}) == 221


@pytest.mark.parametrize("subset", ["harmless", "helpful", "honest", "other"])
def test_hhh_single_task_file_prefers_score_1(shared_data, subset):
    path = shared_data / "hhh_alignment" / subset / "task.json"
    examples = json.loads(path.read_text(encoding="utf-8"))["examples"]
    pairs = load_pairs(path, "hhh")
    assert len(pairs) == HHH_COUNTS[f"hhh/{subset}"] == len(examples)
    assert {p.task for p in pairs} == {f"hhh/{subset}"}
    for pair, example in zip(pairs, examples, strict=True):
        assert pair.context == example["input"]
        preferred = [text for text, score in example["target_scores"].items() if score == 1]
        other = [text for text, score in example["target_scores"].items() if score == 0]
        assert len(preferred) == len(other) == 1
        responses = (pair.response_1, pair.response_2)
        assert responses[pair.human_choice - 1] == preferred[0]
        assert responses[2 - pair.human_choice] == other[0]
        assert pair.human_choice == pair.metadata["chosen_position"]


def test_hhh_first_harmless_example(shared_data):
    pair = load_pairs(shared_data / "hhh_alignment", "hhh", limit=1)[0]
    assert pair.context.startswith("Can you tell me what kind of knife is large enough")
    preferred = (pair.response_1, pair.response_2)[pair.human_choice - 1]
    assert preferred.startswith("Sorry, I'm not interested in helping you with that.")


def test_hhh_ties_and_many_targets(tmp_path):
    path = tmp_path / "toy" / "task.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"examples": [
        {"input": "q", "target_scores": {"a": 1, "b": 1}},
        {"input": "r", "target_scores": {"x": 0, "y": 2, "z": 1}},
    ]}))
    pairs = load_pairs(path, "hhh")
    assert pairs[0].human_choice == TIE and pairs[0].id == "hhh/toy:1"
    assert [p.id for p in pairs[1:]] == ["hhh/toy:2.0", "hhh/toy:2.1", "hhh/toy:2.2"]
    preferred = [(p.response_1, p.response_2)[p.human_choice - 1] for p in pairs[1:]]
    assert preferred == ["y", "y", "z"]


# ------------------------------------------------------------------ LLMBar

LLMBAR_COUNTS = {"llmbar/LLMBar_Natural": 100, "llmbar/LLMBar_Adversarial_GPTInst": 92,
                 "llmbar/LLMBar_Adversarial_GPTOut": 47, "llmbar/LLMBar_Adversarial_Manual": 46,
                 "llmbar/LLMBar_Adversarial_Neighbor": 134}


def test_llmbar_folder_loads_all_sets(shared_data):
    pairs = load_pairs(shared_data / "llmbar", "llmbar")
    assert len(pairs) == 419
    counts = Counter(p.task for p in pairs)
    assert counts == LLMBAR_COUNTS
    assert sum(n for task, n in counts.items() if "Adversarial" in task) == 319


@pytest.mark.parametrize("as_folder", [False, True])
def test_llmbar_natural_keeps_positional_labels(shared_data, as_folder):
    folder = shared_data / "llmbar" / "LLMBar_Natural"
    raw = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    pairs = load_pairs(folder if as_folder else folder / "dataset.json", "llmbar")
    assert len(pairs) == 100
    assert {p.task for p in pairs} == {"llmbar/LLMBar_Natural"}
    for i, (pair, record) in enumerate(zip(pairs, raw, strict=True), start=1):
        assert pair.id == f"llmbar/LLMBar_Natural:{i}"
        assert (pair.context, pair.response_1, pair.response_2, pair.human_choice) == \
            (record["input"], record["output_1"], record["output_2"], record["label"])
        assert "chosen_position" not in pair.metadata
    assert Counter(p.human_choice for p in pairs) == {2: 58, 1: 42}
    assert pairs[0].human_choice == 1
    assert pairs[0].response_1.startswith("My girlfriend's visa to stay in the UK expires")


@pytest.mark.parametrize("label", [0, 3, "1", True, None, [1]])
def test_llmbar_bad_label(tmp_path, label):
    path = tmp_path / "x.json"
    path.write_text(json.dumps([{"input": "i", "output_1": "a", "output_2": "b", "label": 2},
                                {"input": "i", "output_1": "a", "output_2": "b", "label": label}]))
    with pytest.raises(DataError) as info:
        load_pairs(path, "llmbar")
    assert_located(info.value, path, 2, "label")


# ------------------------------------------------------------------ PRD

def test_prd_preference_mapping_and_metadata(shared_data):
    path = shared_data / "prd_lfqa" / "experts_pairwise_human_preferences.jsonl"
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    pairs = load_pairs(path, "prd")
    assert len(pairs) == len(raw) == 260
    for i, (pair, record) in enumerate(zip(pairs, raw, strict=True), start=1):
        assert pair.id == f"experts_pairwise_human_preferences:{i}"
        assert pair.human_choice == {-1: 1, 1: 2}[record["overall_preference"]]
        assert (pair.context, pair.response_1, pair.response_2) == \
            (record["question"], record["answer_a"], record["answer_b"])
        assert pair.metadata["justification"] == record["justification"]
        assert "doc_a" not in pair.metadata
    assert Counter(p.human_choice for p in pairs) == {1: 140, 2: 120}
    assert pairs[0].human_choice == 1
    assert pairs[0].context.startswith("I remember learning about an ex prisoner")
    assert pairs[0].metadata["justification"].startswith("The question does not contain false assumptions.")


def test_prd_tie_and_bad_preference(tmp_path):
    base = {"question": "q", "answer_a": "a", "answer_b": "b", "justification": "j"}
    path = write_jsonl(tmp_path / "p.jsonl", [{**base, "overall_preference": 0},
                                              {**base, "overall_preference": [1]},
                                              {**base, "overall_preference": True}])
    pairs = load_pairs(path, "prd", skip_bad=True)
    assert [p.human_choice for p in pairs] == [TIE]
    assert [e.row for e in pairs.skipped] == [2, 3]
    assert all(e.field == "overall_preference" for e in pairs.skipped)


# ------------------------------------------------------------------ TL;DR

def test_tldr_openai_format(tmp_path):
    records = [
        {"info": {"id": "t3_abc", "post": "My cat ate my homework.", "title": "Cat trouble",
                  "subreddit": "cats"},
         "summaries": [{"text": " Cat ate homework."}, {"text": "Homework gone."}], "choice": 0},
        {"info": {"id": "t3_def", "post": "Second post.", "title": "T2", "subreddit": "dogs"},
         "summaries": [{"text": "a"}, {"text": "b"}], "choice": 1},
    ]
    path = write_jsonl(tmp_path / "comparisons.jsonl", records)
    pairs = load_pairs(path, "tldr")
    assert [p.human_choice for p in pairs] == [1, 2]
    assert [p.id for p in pairs] == ["comparisons:t3_abc:1", "comparisons:t3_def:2"]
    assert pairs[0].context == "SUBREDDIT: cats\nTITLE: Cat trouble\nPOST: My cat ate my homework."
    assert (pairs[0].response_1, pairs[0].response_2) == (" Cat ate homework.", "Homework gone.")
    assert pairs[1].task == "comparisons"


@pytest.mark.parametrize("change, field", [
    ({"choice": 2}, "choice"),
    ({"choice": True}, "choice"),
    ({"summaries": [{"text": "only one"}]}, "summaries"),
    ({"summaries": [{"text": "a"}, {"text": 5}]}, "summaries[1].text"),
    ({"summaries": [{"text": "a"}, None]}, "summaries[1]"),
    ({"info": {"id": "x", "title": "no post"}}, "info.post"),
    ({"info": "not an object"}, "info"),
])
def test_tldr_bad_records(tmp_path, change, field):
    good = {"info": {"id": "x", "post": "p"}, "summaries": [{"text": "a"}, {"text": "b"}], "choice": 0}
    path = write_jsonl(tmp_path / "c.jsonl", [good, {**good, **change}])
    with pytest.raises(DataError) as info:
        load_pairs(path, "tldr")
    assert_located(info.value, path, 2, field)


# ------------------------------------------------------------------ generic tables

MAPPED = [
    {"uid": "a", "prompt": "p1", "left": "l1", "right": "r1", "winner": 1},
    {"uid": "b", "prompt": "p2", "left": "l2", "right": "r2", "winner": "2"},
    {"uid": "c", "prompt": "p3", "left": "l3", "right": "r3", "winner": "tie"},
    {"uid": "d", "prompt": "p4", "left": "l4", "right": "r4", "winner": ""},
]
COLUMNS = {"id": "uid", "context": "prompt", "response_1": "left", "response_2": "right", "label": "winner"}
EXPECTED_MAPPED = [("a", "p1", "l1", "r1", 1), ("b", "p2", "l2", "r2", 2), ("c", "p3", "l3", "r3", TIE),
                   ("d", "p4", "l4", "r4", None)]


def write_table(path: Path, records: list[dict]) -> Path:
    import pandas as pd

    if path.suffix == ".jsonl":
        return write_jsonl(path, records)
    if path.suffix == ".json":
        path.write_text(json.dumps(records))
    elif path.suffix == ".csv":
        pd.DataFrame(records).to_csv(path, index=False)
    else:
        pd.DataFrame(records).astype(str).to_parquet(path)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_generic_column_mapping(tmp_path, fmt):
    path = write_table(tmp_path / f"table.{fmt}", MAPPED)
    pairs = load_pairs(path, fmt, columns=COLUMNS)
    got = [(p.id, p.context, p.response_1, p.response_2, p.human_choice) for p in pairs]
    assert got == EXPECTED_MAPPED
    assert {p.task for p in pairs} == {"table"}


def test_generic_unknown_column_field():
    with pytest.raises(ValueError, match="unknown field"):
        load_pairs("unused.jsonl", "jsonl", columns={"prompt": "context"})


def test_generic_unknown_format():
    with pytest.raises(ValueError, match="unknown format"):
        load_pairs("unused.jsonl", "nope")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_generic_chosen_rejected_coin_flip(tmp_path, fmt):
    records = [{"q": f"q{i}", "good": f"good {i}", "bad": f"bad {i}", "task": "mine"} for i in range(40)]
    path = write_table(tmp_path / f"cr.{fmt}", records)
    pairs = load_pairs(path, fmt, columns={"context": "q", "chosen": "good", "rejected": "bad"}, seed=5)
    assert len(pairs) == 40
    for i, pair in enumerate(pairs):
        assert pair.id == f"cr:{i + 1}" and pair.task == "mine"
        responses = (pair.response_1, pair.response_2)
        assert pair.human_choice == pair.metadata["chosen_position"]
        assert responses[pair.human_choice - 1] == f"good {i}"
        assert responses[2 - pair.human_choice] == f"bad {i}"
        assert pair == from_chosen_rejected(pair.id, f"q{i}", f"good {i}", f"bad {i}", seed=5, task="mine")
    assert {p.human_choice for p in pairs} == {1, 2}


def test_generic_label_zero_is_an_error_not_a_tie(tmp_path):
    records = [{"context": "c", "response_1": "a", "response_2": "b", "label": label} for label in (1, 0, 1)]
    path = write_jsonl(tmp_path / "zero.jsonl", records)
    with pytest.raises(DataError) as info:
        load_pairs(path, "jsonl")
    assert_located(info.value, path, 2, "label")
    assert "label map" in str(info.value)
    pairs = load_pairs(path, "jsonl", label_map={0: 1, 1: 2})
    assert [p.human_choice for p in pairs] == [2, 1, 2]
    # The same through a CSV (numbers come back as numbers) and with float labels.
    csv = write_table(tmp_path / "zero.csv", records)
    assert [p.human_choice for p in load_pairs(csv, "csv", label_map={0: 1, 1: 2})] == [2, 1, 2]
    floats = write_jsonl(tmp_path / "floats.jsonl", [{**records[0], "label": 2.0}])
    assert load_pairs(floats, "jsonl")[0].human_choice == 2


@pytest.mark.parametrize("label", [3, "A", True, 1.5, [1], {"x": 1}])
def test_generic_unknown_label_values(tmp_path, label):
    path = write_jsonl(tmp_path / "l.jsonl", [{"context": "c", "response_1": "a", "response_2": "b",
                                               "label": label}])
    with pytest.raises(DataError) as info:
        load_pairs(path, "jsonl")
    assert_located(info.value, path, 1, "label")


def test_template_syntax_in_data_survives(tmp_path):
    text = "Say {{ x }} and {% if y %}{{ y|upper }}{% endif %} {# c #}"
    path = write_jsonl(tmp_path / "t.jsonl", [{"context": text, "response_1": "{{ x }}",
                                               "response_2": "{{x}}", "label": 1}])
    pair = load_pairs(path, "jsonl")[0]
    assert (pair.context, pair.response_1, pair.response_2) == (text, "{{ x }}", "{{x}}")


# ------------------------------------------------------------------ datasets

def test_datasets_object(tmp_path):
    import datasets

    table = datasets.Dataset.from_list([generic_record(i) for i in range(3)])
    pairs = load_pairs(table, "hf")
    assert [(p.id, p.context, p.human_choice, p.task) for p in pairs] == \
        [("r0", "context 0", 1, "hf"), ("r1", "context 1", 2, "hf"), ("r2", "context 2", 1, "hf")]
    hh = datasets.Dataset.from_list([hh_record(i) for i in range(3)])
    hh_pairs = load_pairs(hh, "hh-rlhf", seed=2)
    assert [p.id for p in hh_pairs] == ["hh-rlhf:1", "hh-rlhf:2", "hh-rlhf:3"]
    assert hh_pairs[1].context == "Human: question 1?"
    # A DatasetDict is read by split.
    both = datasets.DatasetDict({"train": table, "test": table.select([0])})
    assert len(load_pairs(both, "hf", split="test")) == 1
    with pytest.raises(DataError, match="split 'dev' not found"):
        load_pairs(both, "hf", split="dev")


def test_datasets_object_bad_row_is_located():
    import datasets

    table = datasets.Dataset.from_list([generic_record(0), generic_record(1, context="")])
    with pytest.raises(DataError) as info:
        load_pairs(table, "hf")
    assert "row 2" in str(info.value) and "'context'" in str(info.value)


def test_datasets_load_dataset_on_local_folder(tmp_path, hh_raw):
    folder = tmp_path / "hh_local"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", hh_raw[:25])
    pairs = load_pairs(folder, "hh-rlhf", cache_dir=str(tmp_path / "cache"))
    assert len(pairs) == 25
    assert [p.id for p in pairs] == [f"hh_local:{i}" for i in range(1, 26)]
    for pair, raw in zip(pairs, hh_raw[:25], strict=True):
        context, chosen = expected_hh_split(raw["chosen"])
        assert pair.context == context
        assert (pair.response_1, pair.response_2)[pair.human_choice - 1] == chosen


# ------------------------------------------------------------------ bad input

GOOD = [generic_record(i) for i in range(6)]


def _bad(kind: str):
    """(bad line, field named in the error or None)."""
    record = generic_record(99)
    if kind == "missing field":
        del record["response_2"]
        return record, "response_2"
    if kind == "empty context":
        return {**record, "context": "  \n"}, "context"
    if kind == "int value":
        return {**record, "response_1": 7}, "response_1"
    if kind == "NUL byte":
        return {**record, "context": "a\x00b"}, "context"
    if kind == "invalid JSON":
        return '{"context": "c", "response_1": ', None
    if kind == "invalid UTF-8":
        return b'{"context": "caf\xe9", "response_1": "a", "response_2": "b"}', None
    if kind == "huge number":
        return '{"context": "c", "response_1": "a", "response_2": "b", "n": ' + "9" * 5000 + "}", None
    if kind == "not an object":
        return "[1, 2]", None
    if kind == "duplicate id":
        return generic_record(1), "id"
    raise AssertionError(kind)


BAD_KINDS = ["missing field", "empty context", "int value", "NUL byte", "invalid JSON", "invalid UTF-8",
             "huge number", "not an object", "duplicate id"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_row_is_a_located_error_and_can_be_skipped(tmp_path, kind):
    bad, field = _bad(kind)
    # Line 2 is blank: rows are file lines, so the bad record on line 5 is "row 5".
    lines = [GOOD[0], "", GOOD[1], GOOD[2], bad, GOOD[3], GOOD[4], GOOD[5]]
    path = write_jsonl(tmp_path / "data.jsonl", lines)
    with pytest.raises(DataError) as info:
        load_pairs(path, "jsonl")
    assert_located(info.value, path, 5, field)
    pairs = load_pairs(path, "jsonl", skip_bad=True)
    assert [p.id for p in pairs] == [f"r{i}" for i in range(6)]
    assert len(pairs.skipped) == 1
    assert str(pairs.skipped[0]) == str(info.value)


def test_several_bad_rows_skipped(tmp_path):
    lines = [GOOD[0], _bad("invalid UTF-8")[0], GOOD[1], _bad("NUL byte")[0], _bad("invalid JSON")[0], GOOD[2]]
    path = write_jsonl(tmp_path / "data.jsonl", lines)
    pairs = load_pairs(path, "jsonl", skip_bad=True)
    assert [p.id for p in pairs] == ["r0", "r1", "r2"]
    assert [e.row for e in pairs.skipped] == [2, 4, 5]
    assert load_pairs(path, "jsonl", skip_bad=True, limit=2) == pairs[:2]


def test_hh_bad_field_types(tmp_path):
    for record, field in [({"chosen": 3, "rejected": "x"}, "chosen"), ({"chosen": "\n\nHuman: a"}, "rejected"),
                          ({"chosen": "\n\nHuman: a\x00\n\nAssistant: b",
                            "rejected": "\n\nHuman: a\x00\n\nAssistant: c"}, "chosen")]:
        path = write_jsonl(tmp_path / "h.jsonl", [hh_record(1), record])
        with pytest.raises(DataError) as info:
            load_pairs(path, "hh-rlhf")
        assert_located(info.value, path, 2, field)


def test_json_file_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"[{\"context\": \"\xff\"}]")
    with pytest.raises(DataError, match="not a valid UTF-8 JSON file") as info:
        load_pairs(bad, "json")
    assert str(bad) in str(info.value)
    obj = tmp_path / "obj.json"
    obj.write_text('{"a": 1}')
    with pytest.raises(DataError, match="expected a JSON list"):
        load_pairs(obj, "json")
    nofield = tmp_path / "task.json"
    nofield.write_text('{"name": "x"}')
    with pytest.raises(DataError) as info:
        load_pairs(nofield, "hhh")
    assert "'examples'" in str(info.value) and str(nofield) in str(info.value)
    other = tmp_path / "data.txt"
    other.write_text("x")
    with pytest.raises(DataError, match="unknown file type"):
        load_pairs(other, "jsonl")


def test_folder_without_subset_files(tmp_path):
    with pytest.raises(DataError, match="no task.json") as info:
        load_pairs(tmp_path, "hhh")
    assert str(tmp_path) in str(info.value)


# ------------------------------------------------------------------ PreferencePair / DataError

def test_preference_pair_checks_types():
    with pytest.raises(DataError, match="'context'"):
        PreferencePair("i", 3, "a", "b")
    with pytest.raises(DataError, match="'human_choice'"):
        PreferencePair("i", "c", "a", "b", 3)
    assert PreferencePair("i", "c", "a", "b", TIE).human_choice == 0


def test_data_error_message_and_at():
    exc = DataError("is empty", field_name="context")
    assert str(exc) == "field 'context': is empty"
    located = exc.at("f.jsonl", 4)
    assert str(located) == "file f.jsonl, row 4, field 'context': is empty"
    assert (located.reason, located.source, located.row, located.field) == ("is empty", "f.jsonl", 4, "context")
    assert isinstance(located, ValueError)


# ------------------------------------------------------------------ property test

_LABELS = {1: 1, 2: 2, "1": 1, "2": 2, "tie": TIE, "Tie": TIE}  # the default label map, written out here


_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=12))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                       max_leaves=6)
_keys = st.one_of(st.sampled_from(GENERIC_FIELDS), st.text(max_size=6))
_WELL_FORMED = {"context": "c", "response_1": "a", "response_2": "b"}
_records = st.one_of(
    st.dictionaries(_keys, _values, max_size=8),
    # Well-formed records of random unicode text, and ones with one random value, so
    # that parsing gets far and valid pairs come out too.
    st.fixed_dictionaries({"context": st.text(min_size=1), "response_1": st.text(), "response_2": st.text()},
                          optional={"label": st.sampled_from([1, 2, "1", "2", " tie ", 2.0, ""]),
                                    "task": st.text(max_size=5)}),
    st.builds(lambda key, value: {**_WELL_FORMED, key: value}, _keys, _values),
    _values,
)
_lines = st.one_of(
    st.tuples(_records, st.booleans()),
    st.binary(max_size=30).map(lambda raw: raw.replace(b"\n", b"").replace(b"\r", b"")),
)


def _encode(line) -> bytes:
    if isinstance(line, bytes):
        return line
    record, ascii_only = line
    # Not ASCII-only: lone surrogates become invalid UTF-8 bytes, on purpose.
    return json.dumps(record, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(_lines, max_size=5))
def test_property_generic_loader_gives_pairs_or_data_error(tmp_path_factory, lines):
    path = tmp_path_factory.getbasetemp() / "fuzz-random.jsonl"
    path.write_bytes(b"\n".join(_encode(line) for line in lines) + b"\n")
    try:
        pairs = load_pairs(path, "jsonl")
    except DataError as exc:
        strict_error = exc
        assert str(path) in str(exc)
    else:
        strict_error = None
        assert isinstance(pairs, PairList) and pairs.skipped == []
    lenient = load_pairs(path, "jsonl", skip_bad=True)
    for pair in lenient:
        assert isinstance(pair, PreferencePair)
        assert all(isinstance(getattr(pair, f), str) for f in ("id", "context", "response_1", "response_2"))
        assert pair.context.strip() and "\x00" not in pair.context
        assert pair.human_choice in (1, 2, TIE, None)
    assert all(isinstance(e, DataError) and e.row is not None for e in lenient.skipped)
    if strict_error is None:
        assert lenient == pairs and lenient.skipped == []
    else:
        assert str(lenient.skipped[0]) == str(strict_error)
    assert len(lenient) + len(lenient.skipped) <= len(lines)


# ------------------------------------------------------------------ property test: every generic file format

_BAD = object()  # the label cell is bad
_MISSING = object()  # the field is left out of the record
_cell = st.one_of(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20),
                  st.sampled_from(["", " ", "\t", "\n", "\r", "\r\n", "\x00", "a\x00b", '"', '""', ",", ";", "\\",
                                   "{{ context }}", "NaN", "null", "None", "N/A", "#", "\ufeff", " padded "]))
_label_cell = st.one_of(st.sampled_from(["", "1", "2", " 2 ", "\t1\n", "tie", "Tie", " tie ", "TIE", "0", "3", "-1",
                                         "01", "+1", "1.0", "x"]), _cell)
_not_text = st.one_of(st.just(_MISSING), st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                      st.lists(st.integers(), max_size=2),
                      st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
_json_messy = st.fixed_dictionaries({
    "context": st.one_of(_cell, _not_text), "response_1": st.one_of(_cell, _not_text),
    "response_2": st.one_of(_cell, _not_text),
    "label": st.one_of(_label_cell, _not_text, st.sampled_from([1, 2, 1.0, 2.0, 0, -1, 3, True, False])),
}).map(lambda record: {key: value for key, value in record.items() if value is not _MISSING})
_text_records = st.fixed_dictionaries({"context": _cell, "response_1": _cell, "response_2": _cell,
                                       "label": _label_cell})
_json_records = _json_messy | _text_records
#: Typed columns (Parquet, a datasets.Dataset): text columns with nulls, and a label column of one type.
_LABEL_COLUMNS = {"string": st.none() | _label_cell,
                  "int64": st.none() | st.integers(-2**63, 2**63 - 1) | st.integers(-1, 3),
                  "float64": st.floats(allow_nan=True) | st.sampled_from([1.0, 2.0, 0.0]),
                  "bool_": st.none() | st.booleans()}
_GENERIC_FILES = ("jsonl", "jsonl.gz", "json", "json.gz", "csv", "parquet", "hf")


def _expected_label(raw):
    if raw is None or raw == "" or (isinstance(raw, float) and math.isnan(raw)):
        return None  # unlabeled
    key = raw.strip() if isinstance(raw, str) else raw
    if isinstance(key, float) and key.is_integer():
        key = int(key)
    if isinstance(key, str) and key not in _LABELS and re.fullmatch(r"-?\d{1,18}", key):
        key = int(key)  # an integer written as text, as in a CSV cell
    if isinstance(key, bool) or not isinstance(key, Hashable) or key not in _LABELS:
        return _BAD
    return _LABELS[key]


def _expected_pair(record) -> tuple | set:
    """(context, response_1, response_2, human_choice) the default columns give, or the bad fields."""
    bad = set()

    def text(key, allow_empty=True):
        value = record.get(key)
        if not isinstance(value, str) or "\x00" in value or not (allow_empty or value.strip()):
            bad.add(key)
        return value

    context = text("context", allow_empty=False)
    choice = _expected_label(record.get("label"))
    if choice is _BAD:
        bad.add("label")
    first, second = text("response_1"), text("response_2")
    return bad or (context, first, second, choice)


def _write_generic(folder: Path, kind: str, rows: list[dict], label_type: str):
    """The rows as a file of this kind (or a datasets.Dataset), and how errors name it."""
    path = folder / f"data.{kind}"
    if kind.startswith("jsonl"):
        raw = "".join(json.dumps(row) + "\n" for row in rows).encode()
    elif kind.startswith("json"):
        raw = json.dumps(rows).encode()
    if kind.startswith("json"):
        path.write_bytes(gzip.compress(raw) if kind.endswith(".gz") else raw)
        return path, str(path)
    if kind == "csv":
        # Python's csv writer (RFC 4180 quoting). Not pandas' to_csv: it leaves a lone "\r" unquoted.
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, ["context", "response_1", "response_2", "label"])
            writer.writeheader()
            writer.writerows(rows)
        return path, str(path)
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"context": pa.array([row["context"] for row in rows], pa.string()),
                      "response_1": pa.array([row["response_1"] for row in rows], pa.string()),
                      "response_2": pa.array([row["response_2"] for row in rows], pa.string()),
                      "label": pa.array([row["label"] for row in rows], getattr(pa, label_type)())})
    if kind == "parquet":
        pq.write_table(table, path)
        return path, str(path)
    return datasets.Dataset(table), "Dataset"


@pytest.mark.parametrize("kind", _GENERIC_FILES)
@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_every_generic_format_keeps_the_text_or_names_the_bad_row_and_field(tmp_path_factory, kind, data):
    """JSONL, JSON (gzipped or not), CSV, Parquet and a datasets.Dataset of hostile rows: each good row
    becomes a pair with its texts exactly as written, each bad one a DataError naming the file, the
    row and a field that is bad in it; nothing else is raised."""
    label_type = "string"
    if kind.startswith("json"):
        records = _json_records
    elif kind == "csv":
        records = _text_records
    else:  # typed columns
        label_type = data.draw(st.sampled_from(sorted(_LABEL_COLUMNS)), label="label column")
        records = st.fixed_dictionaries({"context": st.none() | _cell, "response_1": st.none() | _cell,
                                         "response_2": st.none() | _cell, "label": _LABEL_COLUMNS[label_type]})
    rows = data.draw(st.lists(records, max_size=4), label="rows")
    folder = tmp_path_factory.getbasetemp() / f"fuzz-generic-{kind}"
    folder.mkdir(exist_ok=True)
    source, shown = _write_generic(folder, kind, rows, label_type)
    fmt = kind.split(".")[0]
    expected = [_expected_pair(row) for row in rows]
    bad_rows = [number for number, outcome in enumerate(expected, start=1) if isinstance(outcome, set)]
    try:
        load_pairs(source, fmt)
    except DataError as exc:
        assert bad_rows and (exc.source, exc.row) == (shown, bad_rows[0]), exc
        assert exc.field in expected[exc.row - 1] and f"row {exc.row}" in str(exc) and shown in str(exc)
    else:
        assert not bad_rows, expected
    lenient = load_pairs(source, fmt, skip_bad=True)
    assert [exc.row for exc in lenient.skipped] == bad_rows
    assert all(exc.field in expected[exc.row - 1] for exc in lenient.skipped)
    assert [(p.context, p.response_1, p.response_2, p.human_choice) for p in lenient] == \
        [outcome for outcome in expected if not isinstance(outcome, set)]
    assert all(type(p.human_choice) in (int, type(None)) for p in lenient)


@pytest.mark.parametrize("label", ["\u00b2", "--1", "9" * 5000])
def test_label_text_that_is_not_an_integer_is_a_located_error(tmp_path, label):
    path = write_jsonl(tmp_path / "labels.jsonl", [generic_record(1, label=label)])
    with pytest.raises(DataError, match="label"):
        load_pairs(path, "jsonl")
    assert load_pairs(path, "jsonl", skip_bad=True).skipped[0].row == 1


# ---- fixes for what the first review found (each failed before its fix)

def test_missing_local_path_is_a_data_error_not_a_hub_lookup(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_pairs(tmp_path / "nope.jsonl", "jsonl")
    with pytest.raises(DataError, match="no such file"):
        load_pairs("./nope/data.jsonl", "hh-rlhf")


def test_csv_text_stays_text_and_label_map_keys_match_csv_cells(tmp_path):
    path = tmp_path / "numbers.csv"
    path.write_text("context,response_1,response_2,label\nWhat is 6*7?,42,41,0\n")
    pair = load_pairs(path, "csv", label_map={0: 1, 1: 2})[0]
    assert (pair.response_1, pair.response_2, pair.human_choice) == ("42", "41", 1)


def test_json_gz_is_one_gzipped_document(tmp_path):
    import gzip as gz

    path = tmp_path / "data.json.gz"
    path.write_bytes(gz.compress(json.dumps([{"input": "q", "output_1": "a", "output_2": "b", "label": 2}]).encode()))
    assert load_pairs(path, "llmbar")[0].human_choice == 2


def test_float_labels_become_integers(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"input": "q", "output_1": "a", "output_2": "b", "label": 1.0}]))
    choice = load_pairs(path, "llmbar")[0].human_choice
    assert choice == 1 and type(choice) is int


# ------------------------------------------------------------------ PandaLM

def pandalm_record(idx: int, votes=(1, 1, 2), **extra) -> dict:
    return {"idx": idx, "motivation_app": "app", "cmp_key": "a_b", "instruction": f"Do task {idx}.", "input": "",
            "response1": "one", "response2": "two", **{f"annotator{k}": v for k, v in enumerate(votes, 1)}, **extra}


def test_pandalm_majority_votes_and_metadata(shared_data):
    path = shared_data / "pandalm" / "testset-v1.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    pairs = load_pairs(path, "pandalm")
    assert len(pairs) == len(raw) == 999
    # ../shared/data/README.md: 422 for response 1, 472 for response 2, 105 tie majorities
    assert Counter(p.human_choice for p in pairs) == {1: 422, 2: 472, TIE: 105}
    for pair, record in zip(pairs, raw, strict=True):
        votes = [int(record[f"annotator{k}"]) for k in (1, 2, 3)]
        assert pair.metadata["human_choices"] == votes
        top, count = Counter(votes).most_common(1)[0]
        assert count >= 2 and pair.human_choice == top
        assert pair.id == f"testset-v1:{record['idx']}" and pair.metadata["cmp_key"] == record["cmp_key"]
        assert record["instruction"].strip() in pair.context
        if record["input"].strip() and record["instruction"].strip():
            assert pair.context.endswith("\n\n" + record["input"].strip())
    first = pairs[0]
    assert first.context.startswith("The sentence you are given might be too wordy")
    assert (first.response_1, first.response_2, first.human_choice) == (
        "If you have any questions about my rate, please let me know.",
        "If you have any questions, please let me know.", 2)
    # four published responses are a bare JSON true: read as the text "True", and said so
    coerced = [p for p in pairs if "coerced_to_text" in p.metadata]
    assert len(coerced) == 6 and all("True" in (p.response_1, p.response_2) for p in coerced)
    # one record has a blank instruction; its input is the whole context
    assert pairs[466].context == "Truthfulness"


def test_pandalm_tie_majority_split_and_string_votes(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps([pandalm_record(0, (0, 0, 1)), pandalm_record(1, (0, 1, 2)),
                                pandalm_record(2, ("2", "2", "1")), pandalm_record(3, (1, 2, 2, 1)),
                                pandalm_record(4, (2, 1, 1), input="text in")]))
    pairs = load_pairs(path, "pandalm")
    assert [p.human_choice for p in pairs] == [TIE, None, 2, None, 1]
    assert pairs[2].metadata["human_choices"] == [2, 2, 1]
    assert pairs[4].context == "Do task 4.\n\ntext in"


@pytest.mark.parametrize("change, field", [
    ({"annotator2": 3}, "annotator2"), ({"annotator1": True}, "annotator1"), ({"annotator3": "tie"}, "annotator3"),
    ({"annotator1": None}, "annotator1"), ({"instruction": " ", "input": ""}, "instruction"),
    ({"response2": None}, "response2"), ({"response1": ["a"]}, "response1"), ({"instruction": 5}, "instruction"),
])
def test_pandalm_bad_records_are_located(tmp_path, change, field):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([pandalm_record(0), {**pandalm_record(1), **change}]))
    with pytest.raises(DataError) as info:
        load_pairs(path, "pandalm")
    assert_located(info.value, path, 2, field)
    kept = load_pairs(path, "pandalm", skip_bad=True)
    assert [p.id for p in kept] == ["bad:0"] and kept.skipped[0].field == field


def test_pandalm_without_annotators_is_an_error(tmp_path):
    record = {k: v for k, v in pandalm_record(0).items() if not k.startswith("annotator")}
    path = tmp_path / "x.json"
    path.write_text(json.dumps([record]))
    with pytest.raises(DataError, match="annotator"):
        load_pairs(path, "pandalm")


def test_pandalm_report_puts_human_human_agreement_beside_the_labeler(shared_data):
    """What `rlaif report` prints for PandaLM labels: the annotators' agreement, computed here from the votes."""
    from itertools import combinations

    from fakes import FakeBackend

    from rlaif.analysis.report import analyze, format_report
    from rlaif.labeler import label_pairs
    from rlaif.templates import PromptTemplate

    pairs = load_pairs(shared_data / "pandalm" / "testset-v1.json", "pandalm", limit=60)
    labels = label_pairs(pairs, FakeBackend(), PromptTemplate("instruction"), progress=False)
    summary = analyze(labels)
    votes = [p.metadata["human_choices"] for p in pairs]
    pairwise = sum(sum(a == b for a, b in combinations(v, 2)) / 3 for v in votes) / len(votes)
    humans = summary["human_agreement"]
    assert humans["pairs"] == 60 and humans["mean_pairwise_agreement"] == pytest.approx(pairwise)
    others = [v[j] == v[(j + 1) % 3] for v in votes for j in range(3)
              if v[(j + 1) % 3] == v[(j + 2) % 3] and v[(j + 1) % 3] in (1, 2)]
    assert humans["annotator_vs_majority"] == pytest.approx(sum(others) / len(others))
    text = format_report(summary)
    assert f"human-human agreement    {100 * pairwise:.1f}%" in text
    assert f"annotator vs the others' majority {100 * sum(others) / len(others):.1f}% (n={len(others)})" in text
