"""Hostile templates and data get nowhere; every loader and the renderer fail only with clear errors."""

import json

import numpy as np
import pytest
from fakes import FakeBackend
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_templates import write_task

from rlaif.analysis.report import summarize
from rlaif.labeler import label_pairs
from rlaif.loaders import FORMATS, load_pairs
from rlaif.pairs import DataError, PreferencePair
from rlaif.templates import PromptTemplate, TemplateError

CASES = 150
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)
jinja_ish = st.sampled_from(["{{", "}}", "{%", "%}", "{#", "#}", "{{ 7*7 }}", "{% raw %}", "\x00", "\n", ""])
hostile_text = st.lists(st.one_of(text, jinja_ish), max_size=8).map("".join)


@settings(max_examples=CASES, deadline=None)
@given(context=hostile_text, first=hostile_text, second=hostile_text, task=st.sampled_from(
    ["harmless", "helpful", "instruction", "summarization"]))
def test_any_data_renders_literally_in_every_shipped_template(context, first, second, task):
    prompt = PromptTemplate(task).render(context, first, second)
    for value in (context, first, second):
        assert value.strip("\n") in prompt.message


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


@settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=st.lists(st.one_of(text, jinja_ish, st.sampled_from(
    ["{{ context }}", "{{ nope }}", "{{ response_1|upper }}", "{% if x %}", "{% endif %}", "{{ 1/0 }}"])), max_size=6)
    .map("".join))
def test_random_user_templates_render_or_raise_template_error(tmp_path_factory, source):
    root = tmp_path_factory.mktemp("t")
    write_task(root, sample=source)
    try:
        PromptTemplate("mine", template_dir=root).render("q", "a", "b")
    except TemplateError as error:
        assert "sample.jinja" in str(error)


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


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_loader_gives_pairs_or_a_located_data_error(tmp_path_factory, fmt):
    records = st.fixed_dictionaries({}, optional={
        field: st.one_of(PLAUSIBLE.get(field, text), json_value) for field in FIELDS[fmt]})

    @settings(max_examples=CASES, deadline=None)
    @given(rows=st.lists(records, min_size=1, max_size=4))
    def check(rows):
        path = tmp_path_factory.mktemp(fmt) / "data.jsonl"
        if fmt == "hhh":
            path = path.with_name("task.json")
            path.write_text(json.dumps({"examples": rows}))
        elif fmt in ("llmbar", "pandalm"):
            path = path.with_name("dataset.json")
            path.write_text(json.dumps(rows))
        else:
            path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        try:
            pairs = load_pairs(path, fmt)
        except DataError as error:
            assert str(path) in str(error) and "row " in str(error)
            return
        for pair in pairs:
            assert isinstance(pair, PreferencePair) and pair.human_choice in (0, 1, 2, None)
            assert type(pair.human_choice) in (int, type(None))

    check()


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
