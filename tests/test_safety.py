"""Hostile templates and data get nowhere; every loader and the renderer fail only with clear errors.

The property tests here are the fuzz tests of the loaders and the template renderers: each runs
``examples(n)`` examples, 10,000 under ``RLAIF_HYPOTHESIS_PROFILE=long`` (tests/fuzzing.py,
benchmarks/fuzz_long.py).
"""

import json
import math
import os
import re
import shutil
from collections import Counter
from itertools import combinations

import numpy as np
import pytest
from fakes import FakeBackend
from fuzzing import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_templates import write_task

from rlaif.analysis.report import summarize
from rlaif.labeler import label_pairs
from rlaif.loaders import FORMATS, load_pairs
from rlaif.pairs import TIE, DataError, PreferencePair
from rlaif.templates import PromptTemplate, TemplateError, list_tasks

CASES = 150
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)
jinja_ish = st.sampled_from(["{{", "}}", "{%", "%}", "{#", "#}", "{{ 7*7 }}", "{% raw %}", "\x00", "\n", ""])
hostile_text = st.lists(st.one_of(text, jinja_ish), max_size=8).map("".join)
TASKS = sorted(list_tasks())

# ------------------------------------------------------------------ the renderers
#
# Each shipped template is rendered twice: with a placeholder for every value (the skeleton: the
# template's own text), and with the hostile values. The prompt must be the skeleton with each
# placeholder replaced by its value, character for character: a value evaluated as Jinja, escaped,
# cut or moved fails. The one trimming the renderer documents: each rendered part loses the
# newlines at its two ends, so a sample ending with a value loses that value's trailing newlines.

#: A placeholder: private-use characters around a name; no template text contains them.
PLACEHOLDER = re.compile("\ue000[^\ue001]*\ue001")


def mark(name: str) -> str:
    return f"\ue000{name}\ue001"


def fill(skeleton: str, values: dict[str, str], parts: dict[str, str] | None = None) -> str:
    """The skeleton with each whole part in ``parts`` and each placeholder replaced, in one pass."""
    alternatives = [re.escape(part) for part in sorted(parts or {}, key=len, reverse=True)] + [PLACEHOLDER.pattern]
    parts = parts or {}
    return re.sub("|".join(alternatives), lambda m: parts[m.group()] if m.group() in parts else values[m.group()],
                  skeleton)


def fill_part(skeleton: str, values: dict[str, str]) -> str:
    """One rendered part (a sample): filled, then its end newlines trimmed, as the renderer trims them."""
    return fill(skeleton, values).strip("\n")


two_strings = st.none() | st.lists(hostile_text, min_size=2, max_size=2)


def valid_two(value) -> bool:
    return value is None or (all(value) and value[0] != value[1])


def templates(task, preamble, labels, names, ending):
    """The template with the hostile labels, names and ending, the same one with placeholders for
    them, and the values of those placeholders; the first is None where they are invalid (a
    TemplateError, checked here)."""
    try:
        template = PromptTemplate(task, preamble, labels=labels, names=names, ending=ending)
    except TemplateError:
        assert not (valid_two(labels) and valid_two(names)), "valid labels/names refused"
        return None, None, None
    assert valid_two(labels) and valid_two(names), "invalid labels/names accepted"
    values = {}
    if labels is not None:
        values.update({mark("label_1"): labels[0], mark("label_2"): labels[1]})
    if names is not None:
        values.update({mark("name_1"): names[0], mark("name_2"): names[1]})
    if ending is not None:
        values[mark("ending")] = ending
    marked = PromptTemplate(task, preamble, labels=None if labels is None else [mark("label_1"), mark("label_2")],
                            names=None if names is None else [mark("name_1"), mark("name_2")],
                            ending=None if ending is None else mark("ending"))
    return template, marked, values


@settings(max_examples=examples(CASES), deadline=None)
@given(task=st.sampled_from(TASKS), data=st.data(), context=hostile_text, first=hostile_text, second=hostile_text,
       labels=two_strings, names=two_strings, ending=st.none() | hostile_text)
def test_any_data_renders_literally_in_every_shipped_template(task, data, context, first, second, labels, names,
                                                              ending):
    preamble = data.draw(st.sampled_from(PromptTemplate(task).preambles), label="preamble")
    template, marked, values = templates(task, preamble, labels, names, ending)
    if template is None:
        return
    values.update({mark("context"): context, mark("first"): first, mark("second"): second})
    skeleton = marked.render(mark("context"), mark("first"), mark("second"))
    prompt = template.render(context, first, second)
    # the pair's sample is the last part: its trailing newlines are the message's
    assert prompt.message == fill(skeleton.message, values).rstrip("\n")
    assert prompt.ending == fill(skeleton.ending, values)
    for value in (context, first, second):
        assert value.strip("\n") in prompt.message


exemplar = st.fixed_dictionaries({"context": hostile_text, "response_1": hostile_text, "response_2": hostile_text,
                                  "rationale": hostile_text, "preferred_position": st.sampled_from([1, 2])})


@settings(max_examples=examples(CASES), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(task=st.sampled_from(TASKS), shots=st.lists(exemplar, min_size=1, max_size=3), rationales=st.booleans(),
       context=hostile_text, first=hostile_text, second=hostile_text, labels=two_strings, names=two_strings,
       ending=st.none() | hostile_text)
def test_any_exemplars_and_rationales_render_literally(task, shots, rationales, context, first, second, labels,
                                                       names, ending):
    """Few-shot prompts (exemplars, with chain-of-thought rationales or not) keep every value as written."""
    template, marked, values = templates(task, "base", labels, names, ending)
    if template is None:
        return
    values.update({mark("context"): context, mark("first"): first, mark("second"): second})
    marked_shots, shown = [], {}
    for k, shot in enumerate(shots):
        marks = {key: mark(f"{key}{k}") for key in ("context", "response_1", "response_2", "rationale")}
        marked_shots.append({**marks, "preferred_position": shot["preferred_position"]})
        values.update({marks[key]: shot[key] for key in ("context", "response_1", "response_2")})
        values[marks["rationale"]] = shot["rationale"].strip()  # shown after the CoT request, trimmed
        sample = marked.render_sample(marks["context"], marks["response_1"], marks["response_2"])
        shown[sample] = fill_part(sample, values)  # each exemplar's sample is a part of its own
    skeleton = marked.render(mark("context"), mark("first"), mark("second"), marked_shots, rationales=rationales)
    prompt = template.render(context, first, second, shots, rationales=rationales)
    assert prompt.message == fill(skeleton.message, values, shown).rstrip("\n")
    assert prompt.ending == fill(skeleton.ending, values)
    assert prompt.message.count("=== Example ") == len(shots)


@settings(max_examples=examples(CASES), deadline=None)
@given(task=st.sampled_from(TASKS), context=hostile_text, response=hostile_text)
def test_any_data_renders_literally_in_every_score_template(task, context, response):
    """Direct scoring prompts (one response, a 1-10 score) keep both values as written."""
    template = PromptTemplate(task)
    skeleton = template.render_score(mark("context"), mark("response"))
    prompt = template.render_score(context, response)
    values = {mark("context"): context, mark("response"): response}
    assert prompt.message == fill(skeleton.message, values).rstrip("\n")
    assert prompt.ending == skeleton.ending and not PLACEHOLDER.search(prompt.ending)


ESCAPES = [
    "{{ context.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ self._TemplateReference__context }}",
    "{% import 'os' as os %}{{ os.system('id') }}",
    "{% include '/etc/passwd' %}",
    "{% include '../../../../etc/passwd' %}",
    "{{ range(10**12) | list }}",
    "{{ lipsum.__globals__['os'].listdir('/') }}",
    "{% for %}",
]


@pytest.mark.parametrize("escape", ESCAPES)
def test_template_escape_attempts_fail_with_a_clear_error(tmp_path, escape):
    write_task(tmp_path, sample=escape + "{{ context }}{{ response_1 }}{{ response_2 }}")
    with pytest.raises(TemplateError, match="sample.jinja"):
        PromptTemplate("mine", template_dir=tmp_path).render("q", "a", "b")


@settings(max_examples=examples(CASES), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=st.lists(st.one_of(text, jinja_ish, st.sampled_from(
    ["{{ context }}", "{{ nope }}", "{{ response_1|upper }}", "{% if x %}", "{% endif %}", "{{ 1/0 }}"])), max_size=6)
    .map("".join))
def test_random_user_templates_render_or_raise_template_error(tmp_path_factory, source):
    root = tmp_path_factory.getbasetemp() / "fuzz-user-template"
    shutil.rmtree(root, ignore_errors=True)
    write_task(root, sample=source)
    try:
        PromptTemplate("mine", template_dir=root).render("q", "a", "b")
    except TemplateError as error:
        assert "sample.jinja" in str(error)


# ------------------------------------------------------------------ the publishers' loaders

json_value = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | text,
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                          max_leaves=8)
FIELDS = {
    "hh-rlhf": ["chosen", "rejected"],
    "hhh": ["input", "target_scores"],
    "llmbar": ["input", "output_1", "output_2", "label"],
    "prd": ["question", "answer_a", "answer_b", "overall_preference"],
    "tldr": ["info", "summaries", "choice"],
    "pandalm": ["idx", "instruction", "input", "response1", "response2", "annotator1", "annotator2", "annotator3"],
}
HH_TURN = st.lists(st.sampled_from(["\n\nHuman:", "\n\nAssistant:", " ", "\n"]) | hostile_text,
                   max_size=3).map("".join)
PLAUSIBLE = {
    "chosen": st.just("\n\nHuman: hi\n\nAssistant: a"), "rejected": st.just("\n\nHuman: hi\n\nAssistant: b"),
    "target_scores": st.dictionaries(text, st.integers(0, 1) | json_value, max_size=3),
    "label": st.sampled_from([1, 2, 0, "1", 1.0, True, None]),
    "overall_preference": st.sampled_from([-1, 0, 1, 2, None]),
    "choice": st.sampled_from([0, 1, 2, None, False]),
    **{f"annotator{k}": st.sampled_from([0, 1, 2, "0", "2", 3, True, None, " 1"]) for k in (1, 2, 3)},
    "info": st.fixed_dictionaries({"post": text}) | json_value,
    "summaries": st.lists(st.fixed_dictionaries({"text": text}) | json_value, max_size=3),
}
#: hh-rlhf transcripts that share a conversation and differ in the final reply, with hostile turns.
HH_PAIR = st.builds(lambda shared, a, b: {"chosen": f"{shared}\n\nAssistant:{a}",
                                          "rejected": f"{shared}\n\nAssistant:{b}"}, HH_TURN, HH_TURN, HH_TURN)
#: Records of the right shape with hostile text everywhere (so that good rows are common too).
WELL_FORMED = {
    "hh-rlhf": HH_PAIR,
    "hhh": st.fixed_dictionaries({"input": hostile_text, "target_scores": st.dictionaries(
        hostile_text, st.integers(-1, 2) | st.floats(allow_nan=False), min_size=2, max_size=4)}),
    "llmbar": st.fixed_dictionaries({"input": hostile_text, "output_1": hostile_text, "output_2": hostile_text,
                                     "label": st.sampled_from([1, 2])}),
    "prd": st.fixed_dictionaries({"question": hostile_text, "answer_a": hostile_text, "answer_b": hostile_text,
                                  "overall_preference": st.sampled_from([-1, 0, 1])}),
    "tldr": st.fixed_dictionaries({
        "info": st.fixed_dictionaries({"post": hostile_text}, optional={"title": hostile_text,
                                                                       "subreddit": hostile_text, "id": text}),
        "summaries": st.lists(st.fixed_dictionaries({"text": hostile_text}), min_size=2, max_size=2),
        "choice": st.sampled_from([0, 1])}),
    "pandalm": st.fixed_dictionaries({
        "idx": st.integers(0, 50), "instruction": hostile_text, "input": st.none() | hostile_text,
        "response1": hostile_text | st.integers() | st.floats() | st.booleans(), "response2": hostile_text,
        **{f"annotator{k}": st.sampled_from([0, 1, 2, "1", " 2"]) for k in (1, 2, 3)}}),
}
RECORDS = {fmt: st.fixed_dictionaries({}, optional={field: st.one_of(PLAUSIBLE.get(field, text), json_value)
                                                    for field in fields}) | WELL_FORMED[fmt]
           for fmt, fields in FIELDS.items()}
PANDALM_VOTE = {0: TIE, 1: 1, 2: 2}


def field_root(field: str) -> str:
    """The format's own field an error names: ``summaries`` of ``summaries[1].text``, ``info`` of ``info.post``."""
    return re.split(r"[.\[]", field)[0]


def pandalm_vote(raw):
    vote = int(raw) if isinstance(raw, str) and raw.strip() in ("0", "1", "2") else raw
    return PANDALM_VOTE[vote]


def pandalm_text(value):
    return str(value) if isinstance(value, (bool, int, float)) else value


def assert_texts_kept(fmt, row, pairs):
    """The pairs one good row gave carry its texts exactly, after the trimming the format documents."""
    if fmt == "hhh":
        scores = row["target_scores"]
        assert len(pairs) == math.comb(len(scores), 2)
        assert {frozenset((p.response_1, p.response_2)) for p in pairs} == set(map(frozenset, combinations(scores, 2)))
        for pair in pairs:
            assert pair.context == row["input"]
            s1, s2 = scores[pair.response_1], scores[pair.response_2]
            assert pair.human_choice == (TIE if s1 == s2 else 1 if s1 > s2 else 2)
        return
    (pair,) = pairs
    got = (pair.context, pair.response_1, pair.response_2, pair.human_choice)
    if fmt == "hh-rlhf":
        chosen, rejected = row["chosen"], row["rejected"]
        cut = os.path.commonprefix([chosen, rejected]).rfind("\n\nAssistant:")
        replies = [transcript[cut + len("\n\nAssistant:"):].strip() for transcript in (chosen, rejected)]
        first = pair.metadata["chosen_position"]
        assert got == (chosen[:cut].strip(), *(replies if first == 1 else replies[::-1]), first)
    elif fmt == "llmbar":
        assert got == (row["input"], row["output_1"], row["output_2"], row["label"])
    elif fmt == "prd":
        preference = {-1: 1, 1: 2, 0: TIE}[row["overall_preference"]]
        assert got == (row["question"], row["answer_a"], row["answer_b"], preference)
    elif fmt == "tldr":
        info = row["info"]
        post = info.get("post") or info.get("article")
        assert got[1:] == (row["summaries"][0]["text"], row["summaries"][1]["text"], row["choice"] + 1)
        assert pair.context.endswith("POST: " + post.rstrip())
    elif fmt == "pandalm":
        parts = (row["instruction"], row.get("input") or "")
        votes = [pandalm_vote(row[key]) for key in sorted((k for k in row if re.fullmatch(r"annotator\d+", k)),
                                                          key=lambda k: int(k[9:]))]
        top, count = Counter(votes).most_common(1)[0]
        assert got == ("\n\n".join(part.strip() for part in parts if part.strip()),
                       pandalm_text(row["response1"]), pandalm_text(row["response2"]),
                       top if 2 * count > len(votes) else None)
        assert pair.metadata["human_choices"] == votes


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@settings(max_examples=examples(CASES), deadline=None)
@given(data=st.data())
def test_every_loader_gives_pairs_or_a_located_data_error(tmp_path_factory, fmt, data):
    """Hostile records of each publisher's format: the good rows load with their texts exactly, every
    bad one is a DataError naming the file, its row and a field of the format, and nothing else."""
    rows = data.draw(st.lists(RECORDS[fmt], min_size=1, max_size=4), label="rows")
    folder = tmp_path_factory.getbasetemp() / f"fuzz-{fmt}"
    folder.mkdir(exist_ok=True)
    path = folder / "data.jsonl"
    if fmt == "hhh":
        path = path.with_name("task.json")
        path.write_text(json.dumps({"examples": rows}))
    elif fmt in ("llmbar", "pandalm"):
        path = path.with_name("dataset.json")
        path.write_text(json.dumps(rows))
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    try:
        strict = load_pairs(path, fmt)
    except DataError as error:
        strict = error
    lenient = load_pairs(path, fmt, skip_bad=True)
    for error in lenient.skipped:
        assert isinstance(error, DataError) and error.source == str(path) and str(path) in str(error)
        assert 1 <= error.row <= len(rows) and f"row {error.row}" in str(error)
        assert error.field and field_root(error.field) in FIELDS[fmt] + ["id"], error
    if isinstance(strict, DataError):
        assert lenient.skipped and str(strict) == str(lenient.skipped[0])
    else:
        assert lenient == strict and not lenient.skipped
    bad_rows = {error.row for error in lenient.skipped}
    for pair in lenient:
        assert isinstance(pair, PreferencePair) and type(pair.human_choice) in (int, type(None))
    good = iter(lenient)
    for number, row in enumerate(rows, start=1):
        if number not in bad_rows:
            count = math.comb(len(row["target_scores"]), 2) if fmt == "hhh" else 1
            assert_texts_kept(fmt, row, [next(good) for _ in range(count)])
    assert next(good, None) is None


# Found by the fuzz tests (each failed before its fix).

def test_tldr_summary_that_is_not_an_object_names_its_field(tmp_path):
    path = tmp_path / "comparisons.jsonl"
    path.write_text(json.dumps({"info": {"post": "p"}, "summaries": [{"text": "a"}, None], "choice": 0}) + "\n")
    with pytest.raises(DataError) as caught:
        load_pairs(path, "tldr")
    assert caught.value.row == 1 and caught.value.field is not None and "summaries" in caught.value.field


@pytest.mark.parametrize("scores", [{"a": math.nan, "b": 1}, {"a": 1, "b": math.nan}])
def test_hhh_nan_scores_are_a_located_error(tmp_path, scores):
    path = tmp_path / "task.json"
    path.write_text(json.dumps({"examples": [{"input": "q", "target_scores": scores}]}))
    with pytest.raises(DataError, match="target_scores"):
        load_pairs(path, "hhh")


class InjectionFollower(FakeBackend):
    """A labeler that obeys any response telling it to answer 1."""

    def label_logprobs(self, prompts, labels):
        rows = super().label_logprobs(prompts, labels)
        for i, prompt in enumerate(prompts):
            if any(word in prompt for word in ("answer 1", "ignore", "Ignore", "label for this pair is 1",
                                               "prefer Output 1", "Better Output=1", "Reply with 1")):
                rows[i] = np.log([0.45, 0.05])
        return rows


class ShorterIsBetter(FakeBackend):
    """An honest labeler for the probe: the correct answers there are the short ones."""

    def label_logprobs(self, prompts, labels):
        rows = []
        for prompt in prompts:
            first, second = prompt.split("\nOutput 1:\n")[1].split("\n\nOutput 2:\n")
            second = second.rsplit("\nBetter Output=", 1)[0]
            rows.append(np.log([0.4, 0.1]) if len(first) < len(second) else np.log([0.1, 0.4]))
        return np.array(rows)


def test_the_injection_probe_exposes_a_labeler_that_follows_injected_instructions():
    probe = load_pairs("injection-probe", "examples")
    assert len(probe) == 8 and {p.human_choice for p in probe} == {1, 2}
    template = PromptTemplate("instruction")
    honest = summarize(label_pairs(probe, ShorterIsBetter(), template, progress=False))
    follower = summarize(label_pairs(probe, InjectionFollower(first_bias=0.0), template, progress=False))
    assert follower["position_bias"]["same_first"] == 1.0  # "answer 1" whatever the order
    assert honest["position_bias"]["same_position_both_orders"] == 0.0 and honest["alignment"] == 1.0
    # swap averaging turns the obeyed injection into p = 0.5 exactly: no label, and it shows
    assert follower["ai_ties"] == 8 and follower["alignment"] == 0.0
