"""Online RL from AI feedback through TRL (GRPO or RLOO): the policy is trained against one reward callable.

    pip install "rlaif[rl]"
    python experiments/policy_rl.py                         # experiments/policy_rl.yaml: RM_AI as the reward
    python experiments/policy_rl.py --reward direct         # d-RLAIF: the labeler's 1-10 score, no reward model

Rewards are the objects the earlier experiments built, used as they are: a saved reward
model (``RewardModel``; RM_AI or RM_HF) or the direct scorer (``DirectScorer``). Both follow
TRL's reward-function convention ``reward(prompts, completions, **kwargs) -> list[float]``,
so this script holds no reward-specific code. The KL penalty to the starting (SFT) policy is
on (``beta``). Writes log.csv (per step: reward, KL, completion length, as TRL logs them),
config.json and, with save_policy, the trained policy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

import rlaif
from rlaif.backends.models import hf_model_path
from rlaif.config_files import ANY_KEYS, EACH, ConfigError, check_keys, read_config, schema_of
from rlaif.training.rewards import reward_from_spec

HERE = Path(__file__).resolve().parent
#: A reward entry, as rlaif.training.rewards.reward_from_spec reads it (which refuses more than one key).
REWARD_SCHEMA = {"reward_model": None, "remote": None,
                 "direct": {"model": None, "task": None, "preamble": None, "chat_template": None}}
CONFIG_SCHEMA = {
    "policy": {"model": None},
    "rewards": {EACH: REWARD_SCHEMA},
    "reward": None,
    "trainer": None,
    "data": {"format": None, "path": None, "skip": None, "prompts": None},
    # trl.GRPOConfig or RLOOConfig fields, whichever ``trainer`` names: load_config checks them against
    # that class (settings_schema), as a schema cannot depend on another key's value.
    "settings": ANY_KEYS,
    "save_policy": None,
    "results": None,
}


def settings_schema(trainer: str, source: str) -> dict:
    """The fields of the TRL config class ``trainer`` names (TRL is imported here, once a config is read)."""
    from trl import GRPOConfig, RLOOConfig

    classes = {"grpo": GRPOConfig, "rloo": RLOOConfig}  # rlaif.training.policy_training.ONLINE_TRAINERS
    if trainer not in classes:
        raise ConfigError(f"{source}: trainer must be one of {sorted(classes)}, got {trainer!r}")
    return schema_of(classes[trainer])


def load_config(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(HERE / "policy_rl.yaml"))
    parser.add_argument("--reward", help="which of the config's rewards to train against")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--results")
    args = parser.parse_args(argv)
    config = read_config(args.config, CONFIG_SCHEMA)
    check_keys(config.get("settings", {}), settings_schema(config.get("trainer", "grpo"), args.config), "settings",
               args.config)
    if args.reward:
        config["reward"] = args.reward
    if config["reward"] not in config["rewards"]:
        raise SystemExit(f"reward {config['reward']!r} is not among the config's rewards {sorted(config['rewards'])}")
    if args.steps:
        config["settings"]["max_steps"] = args.steps
    if args.results:
        config["results"] = args.results
    return config


def main(argv=None) -> pd.DataFrame:
    from rlaif.training.policy_training import train_online  # needs rlaif[rl]

    config = load_config(argv)
    results = Path(config["results"]) / config["reward"]
    results.mkdir(parents=True, exist_ok=True)
    data = config["data"]
    pairs = rlaif.load_pairs(data["path"], data["format"], limit=data.get("skip", 0) + data["prompts"])
    prompts = list(dict.fromkeys(pair.context for pair in pairs[data.get("skip", 0):]))
    reward = reward_from_spec(config["reward"], config["rewards"][config["reward"]])
    policy_path = hf_model_path(config["policy"]["model"])[0]  # TRL reloads the reference model by path
    model, log = train_online(policy_path, reward, prompts, trainer=config.get("trainer", "grpo"),
                              settings=config["settings"], output_dir=results / "trainer")
    log.to_csv(results / "log.csv", index=False)
    (results / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if config.get("save_policy", False):
        model.save_pretrained(results / "policy")
    columns = [c for c in ("step", "reward", "kl", "completions/mean_length") if c in log]
    print(log[columns].to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    return log


if __name__ == "__main__":
    main()
