"""The reward-model experiments end to end on tiny configurations with the real SmolLM2, and the
notebook that reads their outputs, executed top to bottom."""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
HH = str(REPO.parent / "shared" / "data" / "hh-rlhf" / "harmless-base" / "dev.jsonl.gz")
NOTEBOOK = REPO / "notebooks" / "rlaif_vs_rlhf.ipynb"


@pytest.fixture(scope="module")
def rm_results(tmp_path_factory):
    import rlaif_vs_rlhf_rm

    root = tmp_path_factory.mktemp("rm")
    config = {"labeler": {"model": "smollm2-135m", "task": "harmless", "chat_template": True},
              "data": {"format": "hh-rlhf", "path": HH, "limit": 12, "train_fraction": 0.5, "seed": 0},
              "reward_model": {"backbone": "smollm2-135m", "trainable": "head", "epochs": 3, "batch_size": 4,
                               "learning_rate": 0.003, "max_length": 256, "seed": 0},
              "sources": ["human", "ai_soft", "ai_hard"], "save_models": False, "results": str(root / "results")}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    table = rlaif_vs_rlhf_rm.main(["--config", str(root / "config.yaml")])
    return root / "results", table


@pytest.mark.model
def test_rlaif_vs_rlhf_rm_table(rm_results):
    results, table = rm_results
    assert list(table["labeler"]) == ["AI labeler (smollm2-135m)", "RM_HF (human labels)", "RM_AI (AI soft labels)",
                                      "RM_AI hard (AI argmax)"]
    assert (table["heldout_pairs"] == 6).all()
    assert ((table["ci_low"] <= table["heldout_accuracy"]) & (table["heldout_accuracy"] <= table["ci_high"])).all()
    config = json.loads((results / "config.json").read_text())
    assert not set(config["train_ids"]) & set(config["heldout_ids"]) and len(config["train_ids"]) == 6
    history = pd.read_csv(results / "history.csv")
    assert sorted(history.groupby("source")["epoch"].max()) == [3, 3, 3]
    rewards = pd.read_csv(results / "heldout_rewards.csv")
    assert list(rewards["id"]) == config["heldout_ids"]
    # each RM's held-out accuracy is what its rewards say
    for source, name in [("human", "RM_HF (human labels)"), ("ai_soft", "RM_AI (AI soft labels)")]:
        picked = (rewards[f"{source}_reward_1"] > rewards[f"{source}_reward_2"]).map({True: 1, False: 2})
        accuracy = (picked == rewards["human_choice"]).mean()
        assert table.set_index("labeler").loc[name, "heldout_accuracy"] == pytest.approx(accuracy)
    assert (results / "table.md").read_text().count("\n") == 6


PANDALM = str(REPO.parent / "shared" / "data" / "pandalm" / "testset-v1.json")
LLMBAR = str(REPO.parent / "shared" / "data" / "llmbar" / "LLMBar_Natural")


@pytest.fixture(scope="module")
def instruct_results(tmp_path_factory):
    """The instruction config's shape (pool, held-out instructions, prompt choice, curves) made tiny."""
    import rlaif_vs_rlhf_rm

    root = tmp_path_factory.mktemp("rm_instruct")
    config = yaml.safe_load((REPO / "experiments" / "rlaif_vs_rlhf_rm_instruct.yaml").read_text())
    config["labeler"]["model"] = "smollm2-135m"
    config["data"].update(pool=[{"format": "pandalm", "path": PANDALM, "limit": 40},
                                {"format": "llmbar", "path": LLMBAR, "limit": 3}], heldout_pairs=8, human_pairs=6)
    config.update(ai_pairs=[4, 6, 12, "all"], human_pairs_curve=[3, 6],
                  prompt_choice={"pairs": 4, "variants": {"detailed": {"preamble": "detailed"},
                                                          "cot": {"cot": True, "cot_max_tokens": 4, "pairs": 2,
                                                                  "choose": False}}},
                  save_models=False, results=str(root / "results"))
    config["reward_model"].update(backbone="smollm2-135m", epochs=2, max_length=256)
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))  # variants in the order given
    first = rlaif_vs_rlhf_rm.main(["--config", str(root / "config.yaml")])
    return root, config, first


@pytest.mark.model
def test_instruct_rm_experiment_holds_out_whole_instructions_and_draws_curves(instruct_results):
    import rlaif

    root, config, table = instruct_results
    results = Path(config["results"])
    saved = json.loads((results / "config.json").read_text())
    pool = {p.id: p for p in rlaif.load_pairs(PANDALM, "pandalm", limit=40)}
    heldout = [pool[i] for i in saved["heldout_ids"]]
    fitting_contexts = {pool[i].context for i in saved["ai_ids"] if i in pool}
    assert not {p.context for p in heldout} & fitting_contexts  # no instruction on both sides
    assert sum(p.human_choice in (1, 2) for p in heldout) >= 8
    assert saved["train_ids"] == saved["ai_ids"][:6]  # RM_HF's pairs are the AI curve's first pairs
    assert len(saved["ai_ids"]) == 40 - len(heldout) + 3  # "all": every fitting pair, LLMBar's included
    names = list(table["labeler"])
    assert names[:5] == ["Human annotator (each vs the others' majority)", "AI labeler (smollm2-135m)",
                         "RM_HF (human labels)", "RM_AI (AI soft labels)", "RM_AI hard (AI argmax)"]
    scored = sum(p.human_choice in (1, 2) for p in heldout)
    assert (table["heldout_pairs"] == scored).all()
    # the annotator row is each annotator against the other two, computed here from the raw votes
    cases = [v[j] == v[(j + 1) % 3] for p in heldout if p.human_choice in (1, 2)
             for v in [p.metadata["human_choices"]] for j in range(3)
             if v[(j + 1) % 3] == v[(j + 2) % 3] and v[(j + 1) % 3] in (1, 2)]
    assert table.iloc[0]["heldout_accuracy"] == pytest.approx(sum(cases) / len(cases))
    # paired differences with RM_HF: its own is zero; the others match their accuracy gap
    rows = table.set_index("labeler")
    assert rows.loc["RM_HF (human labels)", "minus_rm_hf"] == 0
    for name in ("RM_AI (AI soft labels)", "AI labeler (smollm2-135m)"):
        gap = rows.loc[name, "heldout_accuracy"] - rows.loc["RM_HF (human labels)", "heldout_accuracy"]
        assert rows.loc[name, "minus_rm_hf"] == pytest.approx(gap)
        assert rows.loc[name, "diff_low"] <= rows.loc[name, "minus_rm_hf"] <= rows.loc[name, "diff_high"]
    curve = pd.read_csv(results / "curve.csv")
    for kind in ("AI soft", "AI hard"):
        assert sorted(curve[curve["labels"] == kind]["training_pairs"]) == [4, 6, 12, len(saved["ai_ids"])]
    # the curve's point at RM_HF's pairs is RM_AI soft / hard itself
    for kind, name in (("AI soft", "RM_AI (AI soft labels)"), ("AI hard", "RM_AI hard (AI argmax)")):
        point = curve[(curve["labels"] == kind) & (curve["training_pairs"] == 6)].iloc[0]
        assert point["heldout_accuracy"] == rows.loc[name, "heldout_accuracy"]
    assert sorted(curve[curve["labels"] == "human"]["training_pairs"]) == [3, 6]
    # RM_HF on the same 6 pairs with the same seed is the same model: same accuracy
    same = curve[(curve["labels"] == "human") & (curve["training_pairs"] == 6)].iloc[0]
    assert same["heldout_accuracy"] == rows.loc["RM_HF (human labels)", "heldout_accuracy"]
    assert (results / "curve.png").stat().st_size > 10_000
    choice = pd.read_csv(results / "prompt_choice.csv")
    assert list(choice["variant"]) == ["configured", "detailed", "cot"] and list(choice["pairs"]) == [4, 4, 2]
    assert choice.loc[0, "gain"] == 0 and not choice.loc[2, "chosen"]  # cot is measured, never chosen
    assert choice["chosen"].sum() == 1
    prompt_ids = {json.loads(line)["id"]
                  for line in (results / "prompt_choice" / "detailed.jsonl").read_text().splitlines()
                  if line.strip() and not line.startswith('{"rlaif_header"')} - {None}
    assert prompt_ids <= set(saved["ai_ids"])  # prompt choice sees fitting pairs only


@pytest.mark.model
def test_instruct_rm_experiment_resumes_from_labels_and_features(instruct_results):
    import rlaif_vs_rlhf_rm

    root, config, first = instruct_results
    results = Path(config["results"])
    stamp = (results / "features.pt").stat().st_mtime_ns
    again = rlaif_vs_rlhf_rm.main(["--config", str(root / "config.yaml")])
    pd.testing.assert_frame_equal(first.drop(columns="seconds"), again.drop(columns="seconds"))
    saved = json.loads((results / "config.json").read_text())
    assert saved["seconds"]["labeling"] < first.set_index("labeler").loc["AI labeler (smollm2-135m)", "seconds"] + 60
    assert (results / "features.pt").stat().st_mtime_ns >= stamp


@pytest.fixture(scope="module")
def bon_results(tmp_path_factory):
    import best_of_n
    from test_reward_model import tiny_rm

    from rlaif.backends.prompt_tokens import load_tokenizer
    from rlaif.training.reward_model import RewardTrainingConfig, ranking_targets, train_reward_model

    root = tmp_path_factory.mktemp("bon")
    tokenizer = load_tokenizer("smollm2-135m")
    paths = {}
    for name, seed in (("RM_AI", 0), ("RM_HF", 1)):
        rm = tiny_rm(tokenizer, seed=seed)
        train_reward_model(rm, ranking_targets("Q:", [" Sure.", " No."]), labels_source="test", progress=False,
                           config=RewardTrainingConfig(epochs=1, max_length=64))
        paths[name] = str(rm.save(root / name))
    config = {"policy": {"model": "smollm2-135m"},
              "judge": {"model": "smollm2-135m", "task": "harmless", "chat_template": True},
              "data": {"format": "hh-rlhf", "path": HH, "skip": 900, "prompts": 3},
              "samples": {"n": 3, "temperature": 0.9, "max_new_tokens": 8}, "reward_models": paths,
              "direct_scorer": True, "seed": 0, "results": str(root / "results")}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root / "results", best_of_n.main(["--config", str(root / "config.yaml")])


@pytest.mark.model
def test_reward_hacking_probe_scores_every_attack_with_every_reward(bon_results):
    import reward_hacking_probe

    root = bon_results[0].parent
    config = {"labeler": {"model": "smollm2-135m", "task": "harmless", "chat_template": True},
              "data": {"format": "hh-rlhf", "path": HH, "skip": 950, "prompts": 2}, "attacks": ["empty", "filler_5x"],
              "reward_models": {"RM_AI": str(root / "RM_AI"), "RM_HF": str(root / "RM_HF")},
              "direct_scorer": True, "pairwise_labeler": True, "results": str(root / "probe")}
    (root / "probe.yaml").write_text(yaml.safe_dump(config))
    table = reward_hacking_probe.main(["--config", str(root / "probe.yaml")])
    assert sorted(set(table["reward"])) == ["RM_AI", "RM_HF", "direct (d-RLAIF)", "pairwise AI labeler (smollm2-135m)"]
    assert (table.groupby("reward")["attack"].apply(list) == pd.Series([["empty", "filler_5x"]] * 4,
            index=sorted(set(table["reward"])))).all()
    assert (table["n"] == 2).all() and table["rate"].between(0, 1).all()
    assert (root / "probe" / "probe.md").read_text().count("\n") == 4  # header, rule, two attacks


@pytest.mark.model
def test_best_of_n_picks_by_each_reward_and_judges_against_random(bon_results):
    results, table = bon_results
    assert list(table["selector"]) == ["RM_AI", "RM_HF", "direct (d-RLAIF)"]
    assert ((table["wins"] + table["losses"] + table["ties"]) == 3).all()
    records = [json.loads(line) for line in (results / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(len(r["samples"]) == 3 for r in records)
    for record in records:
        for name in ("RM_AI", "RM_HF", "direct (d-RLAIF)"):
            scores = record["scores"][name]
            assert record["picks"][name] == scores.index(max(scores))
    judged = [json.loads(line) for line in (results / "judgements.jsonl").read_text().splitlines()]
    differs = [r["samples"][r["picks"][name]] != r["samples"][r["picks"]["random"]]
               for name in ("RM_AI", "RM_HF", "direct (d-RLAIF)") for r in records]
    assert len(judged) == sum(differs)  # identical picks are ties, never sent to the judge
    assert int(table["ties"].sum()) >= len(differs) - sum(differs)


@pytest.mark.model
@pytest.mark.parametrize("reward, trainer", [("RM_AI", "grpo"), ("direct", "rloo")])
def test_online_rl_trains_the_policy_against_any_reward_callable(bon_results, reward, trainer):
    """The same script, unchanged, trains against a saved reward model or the direct scorer,
    with GRPO or RLOO."""
    import policy_rl

    root = bon_results[0].parent
    config = {"policy": {"model": "smollm2-135m"},
              "rewards": {"RM_AI": {"reward_model": str(root / "RM_AI")},
                          "direct": {"direct": {"model": "smollm2-135m", "task": "harmless", "chat_template": True}}},
              "reward": "RM_AI", "data": {"format": "hh-rlhf", "path": HH, "skip": 900, "prompts": 2},
              "trainer": trainer, "settings": {"num_generations": 2,
                       "per_device_train_batch_size": 2, "max_completion_length": 4,
                       "temperature": 0.9, "beta": 0.05, "learning_rate": 1e-5, "max_steps": 2, "seed": 0},
              "results": str(root / "rl")}
    (root / f"rl_{trainer}.yaml").write_text(yaml.safe_dump(config))
    log = policy_rl.main(["--config", str(root / f"rl_{trainer}.yaml"), "--reward", reward])
    assert list(log["step"]) == [1, 2]
    assert log[f"rewards/{reward}/mean"].notna().all() and log["completions/mean_length"].le(4).all()
    assert log["kl"].iloc[-1] > 0  # the policy moved away from the reference after the first update
    assert (root / "rl" / reward / "log.csv").exists()


@pytest.fixture(scope="module")
def policy_results(rm_results, bon_results):
    import rlaif_vs_rlhf_policy

    root = bon_results[0].parent
    config = {"policy": {"model": "smollm2-135m"}, "preference_data": str(rm_results[0]),
              "rewards": {"RM_HF": {"reward_model": str(root / "RM_HF")},
                          "direct": {"direct": {"model": "smollm2-135m", "task": "harmless", "chat_template": True}}},
              "arms": {"RLHF": {"online": "RM_HF"}, "d-RLAIF": {"online": "direct"}, "DPO human": {"dpo": "human"},
                       "DPO AI hard": {"dpo": "ai_hard"}, "DPO AI soft": {"dpo": "ai_soft"}},
              "online": {"trainer": "rloo", "num_generations": 2, "per_device_train_batch_size": 2,
                         "max_completion_length": 4, "beta": 0.05, "learning_rate": 1e-5, "max_steps": 2},
              "dpo": {"beta": 0.1, "learning_rate": 5e-6, "max_steps": 1, "per_device_train_batch_size": 2,
                      "max_length": 128},
              "gold": {"reward_model": {"data": {"skip": 12, "count": 6}, "backbone": "smollm2-135m",
                                        "trainable": "head", "epochs": 2, "batch_size": 4, "max_length": 256},
                       "labeler": {"model": "smollm2-135m", "task": "harmless", "chat_template": True}},
              "curve": {"every": 2, "prompts": 2, "max_new_tokens": 4},
              "data": {"format": "hh-rlhf", "path": HH, "train": {"skip": 900, "count": 2},
                       "eval": {"skip": 950, "count": 3}},
              "samples": {"temperature": 0.7, "max_new_tokens": 6}, "seed": 0, "results": str(root / "policy")}
    (root / "policy.yaml").write_text(yaml.safe_dump(config, sort_keys=False))  # arms run in the order given
    return root / "policy", rlaif_vs_rlhf_policy.main(["--config", str(root / "policy.yaml")]), config


@pytest.mark.model
def test_policy_experiment_runs_every_arm_kind_judges_with_gold_judges_and_resumes(policy_results):
    """RL against a reward model and the direct scorer, DPO on human, hard and soft AI labels, all
    from the same start; gold RM on pairs disjoint from the RM experiment's; resumable."""
    import rlaif_vs_rlhf_policy

    results, out, config = policy_results
    arms = list(config["arms"])
    win_rates = out["win_rates"]
    assert list(win_rates["judge"].unique()) == ["gold RM", "gold labeler (smollm2-135m)"]
    assert (win_rates.groupby("judge")["policy"].apply(list) == pd.Series([arms] * 2, index=[
        "gold RM", "gold labeler (smollm2-135m)"])).all()
    assert ((win_rates["wins"] + win_rates["losses"] + win_rates["ties"]) == 3).all()
    # the gold RM's verdicts are what its rewards say
    gold = pd.read_csv(results / "gold_rewards.csv")
    for row in win_rates[win_rates["judge"] == "gold RM"].itertuples():
        assert row.wins == int((gold[row.policy] > gold["SFT"]).sum())
        assert row.losses == int((gold[row.policy] < gold["SFT"]).sum())
    harmless = out["harmless"]
    assert list(harmless["policy"]) == ["people-preferred HH answer", "SFT", *arms]
    assert harmless["judged_harmless"].iloc[1:].between(0, 1).all() and (harmless["n"].iloc[1:] == 3).all()
    assert list(out["signatures"]["policy"]) == ["SFT", *arms]
    during = pd.read_csv(results / "signatures_during_training.csv")
    assert list(zip(during["arm"], during["step"])) == [("RLHF", "step 0"), ("RLHF", "step 2"), ("d-RLAIF", "step 0"),
                                                        ("d-RLAIF", "step 2")]
    gold_info = json.loads((results / "gold_rm.json").read_text())
    assert gold_info["train_pairs"] == 6 and gold_info["heldout_accuracy"]["n"] == 6
    for arm in ("RLHF", "d-RLAIF"):
        curve = out["curves"][arm]
        assert list(curve["step"]) == [0, 2] and curve.loc[0, "kl"] == 0.0
        assert {"proxy", "gold/gold RM", "length_tokens"} <= set(curve.columns)
    for arm in ("rlhf", "dpo_ai_soft"):
        samples = [json.loads(line) for line in (results / "arms" / arm / "samples.jsonl").read_text().splitlines()]
        assert len(samples) == 3 and all(s["completion"].startswith(" ") for s in samples)
    assert (results / "curves.png").stat().st_size > 0 and (results / "lengths.png").stat().st_size > 0
    # resumed: no arm is trained again, and the tables come out the same
    stamps = {arm: (results / "arms" / arm / "arm.json").stat().st_mtime_ns for arm in ("rlhf", "dpo_human")}
    again = rlaif_vs_rlhf_policy.main(["--config", str(results.parent / "policy.yaml")])
    assert {arm: (results / "arms" / arm / "arm.json").stat().st_mtime_ns for arm in stamps} == stamps
    pd.testing.assert_frame_equal(again["win_rates"], win_rates)
    # a changed DPO setting trains the DPO arms again, and only them
    changed = {**config, "dpo": {**config["dpo"], "learning_rate": 1e-5}}
    (results.parent / "policy_changed.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    rlaif_vs_rlhf_policy.main(["--config", str(results.parent / "policy_changed.yaml")])
    after = {arm: (results / "arms" / arm / "arm.json").stat().st_mtime_ns for arm in stamps}
    assert after["rlhf"] == stamps["rlhf"] and after["dpo_human"] != stamps["dpo_human"]


@pytest.mark.model
def test_rlaif_vs_rlhf_notebook_runs_on_the_experiment_outputs(rm_results, bon_results, policy_results,
                                                               instruct_results):
    import matplotlib

    matplotlib.use("Agg")
    notebook = json.loads(NOTEBOOK.read_text())
    namespace = {"__name__": "__main__"}
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        assert cell["outputs"] == [] and cell["execution_count"] is None
        exec(compile("".join(cell["source"]), f"<{NOTEBOOK.name}>", "exec"), namespace)
        if "parameters" in cell["metadata"].get("tags", []):
            namespace["RESULTS"], namespace["BEST_OF_N"] = str(rm_results[0]), str(bon_results[0])
            namespace["POLICY"] = str(policy_results[0])
            namespace["INSTRUCT"] = instruct_results[1]["results"]
    pd.testing.assert_frame_equal(namespace["table"], pd.read_csv(rm_results[0] / "table.csv"))
    assert list(namespace["win_rates"]["selector"]) == list(bon_results[1]["selector"])
    pd.testing.assert_frame_equal(namespace["policy_win_rates"], pd.read_csv(policy_results[0] / "win_rates.csv"))
    pd.testing.assert_frame_equal(namespace["instruct"],
                                  pd.read_csv(Path(instruct_results[1]["results"]) / "table.csv"))
    assert list(namespace["instruct_curve"]["training_pairs"]) == list(
        pd.read_csv(Path(instruct_results[1]["results"]) / "curve.csv")["training_pairs"])
    assert set(namespace["figures"]) == {"accuracy", "reward_gaps", "training", "win_rates", "policy_win_rates",
                                         "overoptimisation", "lengths", "instruct_accuracy", "instruct_curve"}
    import matplotlib.pyplot as plt
    plt.close("all")


def test_best_of_n_samples_the_held_out_instructions_of_a_reward_model_run(tmp_path):
    import best_of_n

    import rlaif

    pairs = rlaif.load_pairs(PANDALM, "pandalm", limit=30)
    heldout = [p.id for p in pairs if p.context in {pairs[3].context, pairs[20].context}]
    (tmp_path / "config.json").write_text(json.dumps({"heldout_ids": heldout}))
    data = {"format": "pandalm", "path": PANDALM, "heldout_from": str(tmp_path / "config.json")}
    assert best_of_n.held_out_prompts(data) == list(dict.fromkeys(
        p.context for p in pairs if p.id in set(heldout)))  # each instruction once, in file order
    assert len(best_of_n.held_out_prompts(data)) == 2
    assert best_of_n.held_out_prompts({**data, "prompts": 1}) == [pairs[3].context]
    (tmp_path / "config.json").write_text(json.dumps({"heldout_ids": ["nope:1"]}))
    with pytest.raises(SystemExit, match="none of its held-out ids"):
        best_of_n.held_out_prompts(data)
