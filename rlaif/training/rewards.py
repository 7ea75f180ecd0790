"""Reward callables from a config entry, so that experiments and trainers hold no reward-specific code.

An entry is ``{reward_model: PATH}`` (a reward model saved by rlaif: RM_AI, RM_HF) or
``{direct: {model, task, preamble, chat_template}}`` (the labeler's 1-10 score, d-RLAIF).
Every callable follows TRL's convention ``reward(prompts, completions, **kwargs) -> list[float]``
and carries the entry's name as ``__name__`` (TRL logs the reward under it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlaif.backends.transformers_backend import TransformersBackend
from rlaif.direct_scores import DirectScorer
from rlaif.templates import PromptTemplate
from rlaif.training.reward_model import load_reward_models


def reward_from_spec(name: str, spec: Mapping[str, Any], backends: dict[str, TransformersBackend] | None = None):
    """The reward named ``name`` from its entry. ``backends`` (model name -> backend) shares a
    loaded labeler between direct rewards; new ones are added to it."""
    if set(spec) == {"reward_model"}:
        reward = load_reward_models({name: spec["reward_model"]})[name]
    elif set(spec) == {"direct"}:
        direct = dict(spec["direct"])
        unknown = set(direct) - {"model", "task", "preamble", "chat_template"}
        if unknown or "model" not in direct or "task" not in direct:
            raise ValueError(f"reward {name}: direct takes model, task, preamble, chat_template; got {sorted(direct)}")
        backends = {} if backends is None else backends
        if direct["model"] not in backends:
            backends[direct["model"]] = TransformersBackend.from_pretrained(direct["model"])
        reward = DirectScorer(backends[direct["model"]], PromptTemplate(direct["task"], direct.get("preamble", "base")),
                              chat_template=direct.get("chat_template", True))
    else:
        raise ValueError(f"reward {name}: give either reward_model: PATH or direct: {{model, task}}, got {dict(spec)}")
    reward.__name__ = name
    return reward
