"""Template rendering: the four parts, data inserted as data, strict variables, user folders."""

from pathlib import Path

import pytest

from rlaif.templates import PromptTemplate, TemplateError, list_tasks, shipped_template_dir

SHIPPED = ("harmless", "helpful", "instruction", "summarization")


def test_shipped_tasks_and_both_preambles_render():
    assert set(SHIPPED) <= set(list_tasks())
    for task in SHIPPED:
        base = PromptTemplate(task, "base").render("CTX", "FIRST", "SECOND")
        detailed = PromptTemplate(task, "detailed").render("CTX", "FIRST", "SECOND")
        assert base.message != detailed.message and len(detailed.message) > len(base.message)
        for prompt in (base, detailed):
            # preamble, then the sample in the order given, then the ending last
            assert prompt.message.index("CTX") < prompt.message.index("FIRST") < prompt.message.index("SECOND")
            assert prompt.text == prompt.message + "\n" + prompt.ending
            assert prompt.ending.endswith("=") and not prompt.text.endswith("\n")


def test_harmless_declares_the_flip_and_others_do_not():
    assert PromptTemplate("harmless").asks_more_harmful
    assert "more harmful" in PromptTemplate("harmless").render("c", "a", "b").message.lower()
    assert not any(PromptTemplate(task).asks_more_harmful for task in ("helpful", "instruction", "summarization"))


def test_data_values_are_inserted_literally():
    hostile = "{{ 7 * 7 }} {% for x in range(3) %}x{% endfor %} {{ self.__init__ }}"
    prompt = PromptTemplate("helpful").render(hostile, hostile, "plain")
    assert prompt.message.count(hostile) == 2
    assert "49" not in prompt.message and "xxx" not in prompt.message


def write_task(root: Path, name: str = "mine",
               sample: str = "Q: {{ context }}\nA: {{ response_1 }}\nB: {{ response_2 }}",
               labels='["A", "B"]', asks_for="preferred") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "task.yaml").write_text(f"description: mine\nlabels: {labels}\nasks_for: {asks_for}\n")
    (folder / "preamble_base.jinja").write_text("Pick A or B.\n")
    (folder / "preamble_detailed.jinja").write_text("Pick A or B carefully.\n")
    (folder / "sample.jinja").write_text(sample + "\n")
    (folder / "ending.jinja").write_text("Answer:")
    return folder


def test_user_template_folder(tmp_path):
    write_task(tmp_path)
    template = PromptTemplate("mine", template_dir=tmp_path)
    assert template.labels == ("A", "B")
    assert template.render("q", "x", "y").text == "Pick A or B.\n\nQ: q\nA: x\nB: y\nAnswer:"
    assert list_tasks(tmp_path) == {"mine": "mine"}


def test_misspelled_variable_is_an_error_naming_the_file(tmp_path):
    write_task(tmp_path, sample="{{ contxt }} {{ response_1 }} {{ response_2 }}")
    with pytest.raises(TemplateError, match=r"sample\.jinja.*contxt"):
        PromptTemplate("mine", template_dir=tmp_path).render("q", "x", "y")


def test_sandbox_blocks_unsafe_attribute_access(tmp_path):
    write_task(tmp_path, sample="{{ context.__class__.__mro__[1].__subclasses__() }}{{ response_1 }}{{ response_2 }}")
    with pytest.raises(TemplateError, match="unsafe|access"):
        PromptTemplate("mine", template_dir=tmp_path).render("q", "x", "y")


@pytest.mark.parametrize("labels, asks_for, message", [
    ('["1", "1"]', "preferred", "two different"),
    ('["1"]', "preferred", "two different"),
    ('["1", "2"]', "worse", "asks_for"),
])
def test_invalid_task_declarations(tmp_path, labels, asks_for, message):
    write_task(tmp_path, labels=labels, asks_for=asks_for)
    with pytest.raises(TemplateError, match=message):
        PromptTemplate("mine", template_dir=tmp_path)


def test_unknown_task_and_preamble():
    with pytest.raises(TemplateError, match="no task 'nope'.*harmless"):
        PromptTemplate("nope")
    with pytest.raises(TemplateError, match="preamble"):
        PromptTemplate("helpful", "fancy")


def test_exemplars_render_between_delimiters_with_their_labels():
    template = PromptTemplate("instruction")
    shots = [{"context": "E1", "response_1": "good", "response_2": "bad", "preferred_position": 1},
             {"context": "E2", "response_1": "bad", "response_2": "good", "preferred_position": 2}]
    message = template.render("SAMPLE", "r1", "r2", exemplars=shots).message
    assert message.index("=== Example 1 ===") < message.index("E1") < message.index("Better Output=1")
    assert message.index("E2") < message.index("Better Output=2") < message.index("=== End of examples ===")
    assert message.index("=== End of examples ===") < message.index("SAMPLE")
    with pytest.raises(TemplateError, match="preferred_position"):
        template.render("s", "a", "b", exemplars=[{**shots[0], "preferred_position": 3}])
    # the harmless question asks which is MORE harmful: the shown answer is the other position
    harmless = PromptTemplate("harmless").render("S", "a", "b", exemplars=shots).message
    assert "More Harmful Reply=2" in harmless and "More Harmful Reply=1" in harmless
    assert harmless.index("E1") < harmless.index("More Harmful Reply=2") < harmless.index("E2")


def test_fingerprint_changes_with_template_content(tmp_path):
    folder = write_task(tmp_path)
    before = PromptTemplate("mine", template_dir=tmp_path).fingerprint
    assert PromptTemplate("mine", template_dir=tmp_path).fingerprint == before
    (folder / "ending.jinja").write_text("Answer =")
    assert PromptTemplate("mine", template_dir=tmp_path).fingerprint != before
    assert PromptTemplate("helpful", "base").fingerprint != PromptTemplate("helpful", "detailed").fingerprint


def test_templates_are_found_inside_the_installed_package():
    root = shipped_template_dir()
    for task in SHIPPED:
        assert (root / task / "task.yaml").is_file()
    assert (root / "_common" / "exemplars.jinja").is_file()


def test_label_words_names_and_ending_can_be_overridden():
    default = PromptTemplate("harmless")
    letters = PromptTemplate("harmless", labels=["A", "B"])
    prompt = letters.render("Human: hi", "first reply", "second reply")
    assert "answer with A or B." in prompt.message and "Reply A:\nfirst reply" in prompt.message
    assert "Reply 1" not in prompt.message and letters.labels == ("A", "B")
    words = PromptTemplate("harmless", labels=["Response 1", "Response 2"], names=["1", "2"], ending="Answer=")
    prompt = words.render("Human: hi", "first reply", "second reply")
    assert "answer with Response 1 or Response 2." in prompt.message and "Reply 1:\nfirst reply" in prompt.message
    assert prompt.ending == "Answer=" and words.answer_label(1) == "Response 2"  # the harmless task flips
    # each variant is its own run: the fingerprint (and so the run id and cache key) differs
    assert len({default.fingerprint, letters.fingerprint, words.fingerprint}) == 3
    assert PromptTemplate("harmless", labels=["1", "2"]).fingerprint == default.fingerprint
    with pytest.raises(TemplateError, match="labels must be two different"):
        PromptTemplate("harmless", labels=["A", "A"])
    with pytest.raises(TemplateError, match="names must be two different"):
        PromptTemplate("harmless", names=["x"])
