"""The experiment script and the analysis notebook, run end to end with the fake engine (no real model)."""

import importlib.util
import json
import math
from pathlib import Path

import pandas as pd
import pytest
from fakes import FakeBackend

from rlaif import ConfigError, PromptTemplate, label_pairs, load_pairs, read_labels, summarize
from rlaif.pairs import TIE

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments" / "label_shared_data.py"
NOTEBOOK = REPO / "notebooks" / "analysis.ipynb"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="module")
def experiment():
    """experiments/label_shared_data.py imported as a module from its path."""
    spec = importlib.util.spec_from_file_location("label_shared_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def alignment_from_jsonl(path):
    """Alignment recomputed by hand from a labels file: AI choice == human choice over non-tie human labels."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    scored = [row for row in rows if row["human_choice"] is not None and row["human_choice"] != TIE]
    return len(rows), (sum(row["ai_choice"] == row["human_choice"] for row in scored) / len(scored)
                       if scored else math.nan)


# ------------------------------------------------------------------ experiment script

def test_experiment_labels_each_available_set_and_resumes(experiment, tmp_path):
    available = [(name, fmt, task) for name, fmt, rel, task in experiment.DATASETS if (SHARED_DATA / rel).exists()]
    if not available:
        pytest.skip(f"no shared data under {SHARED_DATA}")
    results = tmp_path / "results"
    argv = ["--data-root", str(SHARED_DATA), "--limit", "3", "--results", str(results), "--quiet"]

    table = experiment.main(argv, backend=FakeBackend())

    # one row per available set, in the script's order, written to CSV and JSON alike
    assert table["dataset"].tolist() == [name for name, *_ in available]
    csv = pd.read_csv(results / "summary.csv")
    summary_json = json.loads((results / "summary.json").read_text())
    assert csv["dataset"].tolist() == [row["dataset"] for row in summary_json] == table["dataset"].tolist()
    assert set(experiment.SUMMARY_COLUMNS) <= set(csv.columns)
    assert {(name, task) for name, _, task in available} >= {("hhh-harmless", "harmless"), ("hhh-honest", "helpful")}
    for row, (name, fmt, task) in zip(summary_json, available):
        assert row["pairs"] == 3
        assert row["format"] == fmt and row["task"] == task
        n, alignment = alignment_from_jsonl(results / f"{name}.jsonl")
        assert n == 3
        assert (row["alignment"] if row["alignment"] is not None else math.nan) == \
            pytest.approx(alignment, nan_ok=True)
        labels = read_labels(results / f"{name}.jsonl")
        assert row["same_position"] == pytest.approx(
            (labels["position_first_order"] == labels["position_swapped_order"]).mean())
        assert row["mean_candidate_mass"] == pytest.approx(0.5)  # FakeBackend's mass
        assert row["seconds"] >= 0
        assert set(labels["template"]) == {f"{task}/base"}
        assert set(labels["chat_template"]) == {True}
    config = json.loads((results / "config.json").read_text())
    assert config["limit"] == 3 and config["chat_template"] is True and config["model"] == "smollm2-135m"
    assert config["backend"]["backend"] == "fake"
    assert [d["dataset"] for d in config["datasets"]] == table["dataset"].tolist()

    # a rerun with the same settings resumes: no new prompts, same numbers
    before = {name: (results / f"{name}.jsonl").read_bytes() for name, *_ in available}
    rerun_backend = FakeBackend()
    again = experiment.main(argv, backend=rerun_backend)
    assert rerun_backend.prompts_seen == []
    assert {name: (results / f"{name}.jsonl").read_bytes() for name, *_ in available} == before
    pd.testing.assert_frame_equal(again.drop(columns="seconds"), table.drop(columns="seconds"))


def test_experiment_skips_missing_sets_with_a_note(experiment, tmp_path, capsys):
    llmbar = SHARED_DATA / "llmbar" / "LLMBar_Natural"
    if not llmbar.exists():
        pytest.skip(f"{llmbar} not found")
    root = tmp_path / "data"  # a data root holding only LLMBar Natural (a link, not a copy)
    (root / "llmbar").mkdir(parents=True)
    (root / "llmbar" / "LLMBar_Natural").symlink_to(llmbar, target_is_directory=True)

    table = experiment.main(["--data-root", str(root), "--limit", "2", "--results", str(tmp_path / "r"),
                             "--no-chat-template", "--quiet"], backend=FakeBackend())

    assert table["dataset"].tolist() == ["llmbar-natural"] and table["pairs"].tolist() == [2]
    out = capsys.readouterr().out
    missing = ["hh-rlhf-harmless", "hhh-harmless", "hhh-helpful", "hhh-honest", "hhh-other", "prd-lfqa"]
    for name in missing:
        assert f"skipping {name}" in out
    assert set(read_labels(tmp_path / "r" / "llmbar-natural.jsonl")["chat_template"]) == {False}
    assert json.loads((tmp_path / "r" / "config.json").read_text())["skipped"] == missing


# ------------------------------------------------------------------ notebook

def test_notebook_is_valid_nbformat_4_without_outputs():
    notebook = json.loads(NOTEBOOK.read_text())
    assert notebook["nbformat"] == 4
    assert {cell["cell_type"] for cell in notebook["cells"]} == {"markdown", "code"}
    for cell in notebook["cells"]:
        assert isinstance(cell["source"], (str, list)) and isinstance(cell["metadata"], dict)
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    try:
        import nbformat
    except ImportError:
        return
    nbformat.validate(nbformat.reads(NOTEBOOK.read_text(), as_version=4))


@pytest.fixture
def example_labels(tmp_path):
    """A labels file from the shipped examples, labeled by the fake engine."""
    path = tmp_path / "demo-labels.jsonl"
    labels = label_pairs(load_pairs(None, "examples"), FakeBackend(first_bias=0.0), PromptTemplate("instruction"),
                         out=path, progress=False)
    return path, labels


@pytest.mark.parametrize("with_other", [False, True], ids=["one-run", "with-comparison"])
def test_notebook_runs_top_to_bottom(example_labels, with_other, tmp_path, capsys):
    import matplotlib

    from rlaif import metrics

    matplotlib.use("Agg")
    path, labels = example_labels
    other = tmp_path / "other.jsonl"
    label_pairs(load_pairs(None, "examples"), FakeBackend(first_bias=2.0), PromptTemplate("instruction"),
                out=other, progress=False)
    notebook = json.loads(NOTEBOOK.read_text())
    namespace = {"__name__": "__main__"}
    parameters_seen = False
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        exec(compile("".join(cell["source"]), f"<{NOTEBOOK.name} {cell.get('id')}>", "exec"), namespace)
        if "parameters" in cell["metadata"].get("tags", []):
            assert namespace["LABELS"] == "runs/demo-labels.jsonl"
            namespace["LABELS"] = str(path)
            namespace["OTHER"] = str(other) if with_other else None
            parameters_seen = True
    assert parameters_seen

    df = namespace["df"]
    assert isinstance(df, pd.DataFrame) and df["id"].tolist() == labels["id"].tolist()
    per_task = namespace["per_task"]
    assert per_task.index.tolist() == ["examples"]
    assert per_task.loc["examples", "alignment"] == pytest.approx(summarize(labels)["alignment"])
    assert namespace["calibration"]["n"] == summarize(labels)["pairs_scored"]
    assert namespace["scaling"]["temperature"] > 0
    same = namespace["same_position"]
    assert len(same) == round(summarize(labels)["position_bias"]["same_position_both_orders"] * len(labels))
    worst = namespace["most_confident"]
    assert len(worst) <= 5 and (worst["ai_choice"] != worst["human_choice"]).all()
    assert worst["confidence"].is_monotonic_decreasing
    assert namespace["length"]["n"] > 0
    if with_other:
        assert namespace["comparison"] == metrics.labeler_agreement(labels, read_labels(other))
    else:
        assert namespace["comparison"] is None
    assert "alignment with humans" in capsys.readouterr().out
    import matplotlib.pyplot as plt
    plt.close("all")


def test_prompt_variants_experiment_runs_every_variant_on_the_same_pairs(tmp_path):
    import importlib.util

    from test_prompting import ScoreFake

    class Both(ScoreFake):
        """Pairwise labels from FakeBackend, 1-10 scores from ScoreFake."""

        def label_logprobs(self, prompts, labels):
            if len(labels) == 19:
                return super().label_logprobs(prompts, labels)
            return FakeBackend.label_logprobs(self, prompts, labels)

    spec = importlib.util.spec_from_file_location("prompt_variants", REPO / "experiments" / "prompt_variants.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": f"x{i}", "context": f"q{i}", "response_1": "GOOD a" if i % 2 else "b",
                                        "response_2": "b" if i % 2 else "GOOD a", "label": 1 if i % 2 else 2}) + "\n"
                            for i in range(4)))
    config = tmp_path / "c.yaml"
    config.write_text(f"""model: fake
chat_template: false
results: {tmp_path / 'results'}
datasets:
  tiny: {{format: jsonl, path: {data}, task: instruction, limit: 4}}
variants:
  base: {{preambles: [base]}}
  two_shot: {{shots: 2}}
  cot: {{cot: true, cot_max_tokens: 8}}
  direct: {{direct: true}}
  ensemble: {{preambles: [base, detailed]}}
""")
    table = module.main(["--config", str(config)], backend=Both())
    assert list(table[table.dataset == "tiny"]["variant"]) == ["base", "two_shot", "cot", "direct", "ensemble"]
    assert (table["pairs"] == 4).all() and len(table) == 10
    assert table.set_index(["dataset", "variant"]).loc[("tiny", "direct"), "alignment"] == 1.0
    for name in ("variants.csv", "variants.json", "variants.md", "config.json"):
        assert (tmp_path / "results" / name).is_file()
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().replace("shots: 2", "shotz: 2"))
    with pytest.raises(ConfigError, match=r"unknown key 'variants\.two_shot\.shotz' \(did you mean 'shots'\?\)"):
        module.main(["--config", str(bad)], backend=Both())
