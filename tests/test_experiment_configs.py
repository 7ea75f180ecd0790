"""Config files: rlaif.config_files checks keys at every depth, and every experiment script's schema
takes its shipped YAML files and refuses a typo however deep, naming the key's dotted path."""

import dataclasses
import importlib
import sys
from pathlib import Path

import pytest
import yaml

from rlaif.config_files import ANY_KEYS, EACH, ConfigError, read_config, schema_of

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

# ---------------------------------------------------------------- rlaif.config_files


def write(tmp_path, config, name="c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    return path


def test_an_unknown_key_at_depth_three_is_named_with_its_full_path(tmp_path):
    schema = {"a": {"b": {"c": None, "d": None}}, "e": None}
    assert read_config(write(tmp_path, {"a": {"b": {"c": 1, "d": [2]}}, "e": 3}), schema)["a"]["b"]["d"] == [2]
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key 'a\.b\.x'; known in a\.b: \['c', 'd'\]"):
        read_config(write(tmp_path, {"a": {"b": {"c": 1, "x": 2}}}), schema)
    with pytest.raises(ConfigError, match=r"unknown key 'f'; known: \['a', 'e'\]"):
        read_config(write(tmp_path, {"f": 1}), schema)


def test_each_checks_every_named_entry(tmp_path):
    schema = {"rewards": {EACH: {"path": None, "scale": None}}}
    config = {"rewards": {"one": {"path": "p"}, "two": {"path": "q", "scale": 2}}}
    assert read_config(write(tmp_path, config), schema) == config
    config["rewards"]["two"]["scal"] = 3
    with pytest.raises(ConfigError, match=r"unknown key 'rewards\.two\.scal'"):
        read_config(write(tmp_path, config), schema)
    with pytest.raises(ConfigError, match=r"rewards\.one must be a mapping of settings, got str"):
        read_config(write(tmp_path, {"rewards": {"one": "p"}}), schema)


def test_any_keys_takes_any_keys_but_only_in_a_mapping(tmp_path):
    schema = {"options": ANY_KEYS}
    config = {"options": {"anything": {"deep": [1, {"x": 2}]}, "else": None}}
    assert read_config(write(tmp_path, config), schema) == config
    with pytest.raises(ConfigError, match=r"c\.yaml: options must be a mapping, got list"):
        read_config(write(tmp_path, {"options": [1, 2]}), schema)


def test_a_value_where_a_mapping_is_expected_is_refused(tmp_path):
    schema = {"data": {"path": None}}
    with pytest.raises(ConfigError, match=r"c\.yaml: data must be a mapping of settings, got int"):
        read_config(write(tmp_path, {"data": 3}), schema)
    with pytest.raises(ConfigError, match=r"c\.yaml: the file must be a mapping of settings, got list"):
        read_config(write(tmp_path, "- a\n- b\n"), schema)
    with pytest.raises(ConfigError, match="got NoneType"):  # an empty file
        read_config(write(tmp_path, ""), schema)


def test_invalid_yaml_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        read_config(write(tmp_path, "a: [1, 2\nb: 3\n", "broken.yaml"), {"a": None, "b": None})


def test_a_close_key_gets_a_did_you_mean_hint(tmp_path):
    schema = {"reward_model": {"learning_rate": None, "epochs": None}}
    hint = r"unknown key 'reward_model\.learning_rat' \(did you mean 'learning_rate'\?\)"
    with pytest.raises(ConfigError, match=hint):
        read_config(write(tmp_path, {"reward_model": {"learning_rat": 0.1}}), schema)
    with pytest.raises(ConfigError) as error:  # nothing close: no hint
        read_config(write(tmp_path, {"reward_model": {"zzz": 1}}), schema)
    assert "did you mean" not in str(error.value)


def test_a_config_error_exits_like_a_usage_error_and_schema_of_lists_a_dataclass(tmp_path):
    assert issubclass(ConfigError, SystemExit)

    @dataclasses.dataclass
    class Settings:
        rate: float = 0.1
        steps: int = 1

    assert schema_of(Settings, extra={"x": None}) == {"rate": None, "steps": None, "extra": {"x": None}}
    assert read_config(write(tmp_path, {"rate": 1, "steps": 2}), {"rate", "steps"}) == {"rate": 1, "steps": 2}
    with pytest.raises(ConfigError, match="unknown key 'rat'"):  # a plain collection of names is a schema too
        read_config(write(tmp_path, {"rat": 1}), {"rate", "steps"})


# ---------------------------------------------------------------- the experiments' schemas

#: Every YAML file in experiments/ and the script that reads it.
SHIPPED = {
    "best_of_n.yaml": "best_of_n",
    "best_of_n_instruct.yaml": "best_of_n",
    "label_quality.yaml": "label_quality",
    "label_quality_1.5b.yaml": "label_quality",
    "label_quality_hh_1.5b.yaml": "label_quality",
    "policy_rl.yaml": "policy_rl",
    "prompt_variants.yaml": "prompt_variants",
    "reward_hacking_probe.yaml": "reward_hacking_probe",
    "rlaif_vs_rlhf_policy.yaml": "rlaif_vs_rlhf_policy",
    "rlaif_vs_rlhf_rm.yaml": "rlaif_vs_rlhf_rm",
    "rlaif_vs_rlhf_rm_instruct.yaml": "rlaif_vs_rlhf_rm",
}


def test_every_shipped_config_has_its_script_here():
    assert sorted(path.name for path in EXPERIMENTS.glob("*.yaml")) == sorted(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_config_loads(name):
    script = importlib.import_module(SHIPPED[name])
    config = script.load_config(["--config", str(EXPERIMENTS / name)])
    assert set(config) <= set(script.CONFIG_SCHEMA)
    assert read_config(EXPERIMENTS / name, script.CONFIG_SCHEMA)


def renamed(config: dict, path: tuple, new: str) -> dict:
    """``config`` with the key at ``path`` (keys and list indices) renamed to ``new``, its value kept."""
    *parents, old = path
    holder = config
    for key in parents:
        holder = holder[key]
    holder[new] = holder.pop(old)
    return config


TYPOS = [  # (script, shipped config, key path, typo, what the error says)
    ("best_of_n", "best_of_n.yaml", ("data", "prompts"), "promts", r"unknown key 'data\.promts'"),
    ("best_of_n", "best_of_n.yaml", ("samples", "temperature"), "temperatur",
     r"unknown key 'samples\.temperatur' \(did you mean 'temperature'\?\)"),
    ("best_of_n", "best_of_n_instruct.yaml", ("judge", "chat_template"), "chat", r"unknown key 'judge\.chat'"),
    ("best_of_n", "best_of_n_instruct.yaml", ("policy", "chat_template"), "chat_templates",
     r"unknown key 'policy\.chat_templates'"),
    ("label_quality", "label_quality.yaml", ("label_words", "letters", "ending"), "endings",
     r"unknown key 'label_words\.letters\.endings'"),
    ("label_quality", "label_quality_1.5b.yaml", ("techniques", "one_shot", "shots"), "shotz",
     r"unknown key 'techniques\.one_shot\.shotz' \(did you mean 'shots'\?\)"),
    ("policy_rl", "policy_rl.yaml", ("data", "skip"), "skp", r"unknown key 'data\.skp'"),
    ("policy_rl", "policy_rl.yaml", ("rewards", "direct", "direct", "task"), "tsk",
     r"unknown key 'rewards\.direct\.direct\.tsk'"),
    ("policy_rl", "policy_rl.yaml", ("rewards", "RM_AI", "reward_model"), "rewardmodel",
     r"unknown key 'rewards\.RM_AI\.rewardmodel'"),
    ("policy_rl", "policy_rl.yaml", ("settings", "learning_rate"), "learnin_rate",
     r"policy_rl\.yaml: unknown key 'settings\.learnin_rate' \(did you mean 'learning_rate'\?\)"),
    ("prompt_variants", "prompt_variants.yaml", ("datasets", "llmbar-natural", "limit"), "limt",
     r"unknown key 'datasets\.llmbar-natural\.limt'"),
    ("prompt_variants", "prompt_variants.yaml", ("variants", "base_cot", "cot_max_tokens"), "cot_max_token",
     r"unknown key 'variants\.base_cot\.cot_max_token'"),
    ("reward_hacking_probe", "reward_hacking_probe.yaml", ("labeler", "preamble"), "preambel",
     r"unknown key 'labeler\.preambel'"),
    ("reward_hacking_probe", "reward_hacking_probe.yaml", ("data", "prompts"), "prompt",
     r"unknown key 'data\.prompt'"),
    ("rlaif_vs_rlhf_policy", "rlaif_vs_rlhf_policy.yaml", ("gold", "reward_model", "learning_rate"), "learning_rat",
     r"unknown key 'gold\.reward_model\.learning_rat'"),
    ("rlaif_vs_rlhf_policy", "rlaif_vs_rlhf_policy.yaml", ("gold", "reward_model", "data", "count"), "cont",
     r"unknown key 'gold\.reward_model\.data\.cont'"),
    ("rlaif_vs_rlhf_policy", "rlaif_vs_rlhf_policy.yaml", ("gold", "labeler", "task"), "tsk",
     r"unknown key 'gold\.labeler\.tsk'"),
    ("rlaif_vs_rlhf_policy", "rlaif_vs_rlhf_policy.yaml", ("data", "eval", "skip"), "skp",
     r"unknown key 'data\.eval\.skp'"),
    ("rlaif_vs_rlhf_policy", "rlaif_vs_rlhf_policy.yaml", ("arms", "RLHF", "online"), "onlin",
     r"unknown key 'arms\.RLHF\.onlin'"),
    ("rlaif_vs_rlhf_policy", "rlaif_vs_rlhf_policy.yaml", ("online", "max_steps"), "max_step",
     r"unknown key 'online\.max_step'"),
    ("rlaif_vs_rlhf_policy", "rlaif_vs_rlhf_policy.yaml", ("dpo", "max_length"), "max_lenght",
     r"unknown key 'dpo\.max_lenght'"),
    ("rlaif_vs_rlhf_policy", "rlaif_vs_rlhf_policy.yaml", ("curve", "every"), "evry", r"unknown key 'curve\.evry'"),
    ("rlaif_vs_rlhf_rm", "rlaif_vs_rlhf_rm.yaml", ("reward_model", "learning_rate"), "learning_rat",
     r"unknown key 'reward_model\.learning_rat'"),
    ("rlaif_vs_rlhf_rm", "rlaif_vs_rlhf_rm.yaml", ("labeler", "shots"), "shot", r"unknown key 'labeler\.shot'"),
    ("rlaif_vs_rlhf_rm", "rlaif_vs_rlhf_rm.yaml", ("data", "limit"), "limt", r"unknown key 'data\.limt'"),
    ("rlaif_vs_rlhf_rm", "rlaif_vs_rlhf_rm_instruct.yaml", ("prompt_choice", "variants", "cot", "choose"), "chose",
     r"unknown key 'prompt_choice\.variants\.cot\.chose'"),
    ("rlaif_vs_rlhf_rm", "rlaif_vs_rlhf_rm_instruct.yaml", ("data", "pool", 1, "path"), "paht",
     r"unknown key 'data\.pool\[1\]\.paht'"),
]


@pytest.mark.parametrize("script, name, path, typo, message", TYPOS,
                         ids=[f"{name}:{'.'.join(map(str, path))}" for _, name, path, _, _ in TYPOS])
def test_a_nested_typo_fails_naming_its_dotted_path(tmp_path, script, name, path, typo, message):
    config = renamed(yaml.safe_load((EXPERIMENTS / name).read_text()), path, typo)
    bad = write(tmp_path, config, name)
    with pytest.raises(SystemExit, match=message):
        importlib.import_module(script).load_config(["--config", str(bad)])


def test_the_trainer_decides_which_trl_fields_the_online_settings_take(tmp_path):
    import policy_rl
    import rlaif_vs_rlhf_policy

    config = yaml.safe_load((EXPERIMENTS / "policy_rl.yaml").read_text())
    config["settings"]["num_iterations"] = 2  # a GRPOConfig field RLOOConfig has too
    assert policy_rl.load_config(["--config", str(write(tmp_path, config))])["settings"]["num_iterations"] == 2
    config["trainer"] = "ppo"
    with pytest.raises(SystemExit, match=r"trainer must be one of \['grpo', 'rloo'\], got 'ppo'"):
        policy_rl.load_config(["--config", str(write(tmp_path, config))])
    config = yaml.safe_load((EXPERIMENTS / "rlaif_vs_rlhf_policy.yaml").read_text())
    config["online"]["num_train_epochs"] = 1
    config["dpo"]["temperature"] = 0.9  # a GRPO field, not a DPOConfig one
    with pytest.raises(SystemExit, match=r"unknown key 'dpo\.temperature'"):
        rlaif_vs_rlhf_policy.load_config(["--config", str(write(tmp_path, config))])


def test_a_reward_may_be_a_saved_model_the_direct_scorer_or_a_reward_server(tmp_path):
    import policy_rl

    config = yaml.safe_load((EXPERIMENTS / "policy_rl.yaml").read_text())
    config["rewards"]["served"] = {"remote": "http://127.0.0.1:8000"}
    config["reward"] = "served"
    assert policy_rl.load_config(["--config", str(write(tmp_path, config))])["rewards"]["served"]["remote"]


def test_a_null_gold_labeler_means_the_gold_rm_alone(tmp_path):
    import rlaif_vs_rlhf_policy

    config = yaml.safe_load((EXPERIMENTS / "rlaif_vs_rlhf_policy.yaml").read_text())
    config["gold"]["labeler"] = None
    assert rlaif_vs_rlhf_policy.load_config(["--config", str(write(tmp_path, config))])["gold"]["labeler"] is None
    config["gold"]["labeler"] = "qwen2.5-coder-0.5b"
    with pytest.raises(SystemExit, match=r"gold\.labeler must be a mapping of settings, got str"):
        rlaif_vs_rlhf_policy.load_config(["--config", str(write(tmp_path, config))])


def test_the_reward_model_experiment_refuses_a_mix_of_the_two_data_shapes(tmp_path):
    import rlaif_vs_rlhf_rm

    config = yaml.safe_load((EXPERIMENTS / "rlaif_vs_rlhf_rm_instruct.yaml").read_text())
    config["data"]["limit"] = 100  # read only in the one-set shape: it would be ignored
    with pytest.raises(SystemExit, match=r"data keys \['limit'\] are not read in the pool shape"):
        rlaif_vs_rlhf_rm.load_config(["--config", str(write(tmp_path, config))])
    config = yaml.safe_load((EXPERIMENTS / "rlaif_vs_rlhf_rm.yaml").read_text())
    config["data"]["heldout_pairs"] = 100
    with pytest.raises(SystemExit, match=r"data keys \['heldout_pairs'\] are not read in the one-set shape"):
        rlaif_vs_rlhf_rm.load_config(["--config", str(write(tmp_path, config))])
    config = yaml.safe_load((EXPERIMENTS / "rlaif_vs_rlhf_rm_instruct.yaml").read_text())
    config["data"]["pool"] = {"format": "pandalm"}
    with pytest.raises(SystemExit, match=r"data\.pool must be a list"):
        rlaif_vs_rlhf_rm.load_config(["--config", str(write(tmp_path, config))])


def test_values_a_schema_cannot_check_are_still_checked(tmp_path):
    import prompt_variants
    import rlaif_vs_rlhf_policy

    config = yaml.safe_load((EXPERIMENTS / "prompt_variants.yaml").read_text())
    config["variants"]["base_1shot"]["shots"] = -1
    with pytest.raises(SystemExit, match=r"variants\.base_1shot: shots must be >= 0"):
        prompt_variants.load_config(["--config", str(write(tmp_path, config))])
    config = yaml.safe_load((EXPERIMENTS / "rlaif_vs_rlhf_policy.yaml").read_text())
    config["arms"]["RLHF"] = {"online": "RM_HF", "dpo": "human"}
    with pytest.raises(SystemExit, match=r"arm 'RLHF' must be"):
        rlaif_vs_rlhf_policy.load_config(["--config", str(write(tmp_path, config))])
