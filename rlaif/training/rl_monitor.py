"""Over-optimisation monitor: proxy reward, gold reward, KL and length of an RL policy as it trains.

Gao et al. (2022) show the signature of reward over-optimisation: as the policy moves away
from its start (KL grows), the reward it is trained on keeps rising while a held-out "gold"
reward rises, peaks and falls. ``RewardCurve`` is a ``transformers.TrainerCallback`` that
measures exactly those quantities on a fixed set of prompts before the first step and every
``every`` steps, so any TRL trainer that takes callbacks (GRPO, RLOO) records the curve.

The policy is sampled at temperature 1, its own distribution, so that the mean over samples
of ``log π(y|x) - log π_ref(y|x)`` (summed over the sample's tokens) estimates the sequence-level
KL(π || π_ref) without bias. Sampling keeps the global random state (CPU and CUDA), so the
monitor does not change the training run; a proxy that is the training reward object itself
can, at the 1e-8 level, when its prefix caches round differently (measured with DirectScorer).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import pandas as pd
import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from rlaif.backends.base import cut_at_stop

Reward = Callable[..., list[float]]


def sequence_logps(model, sequences: torch.Tensor, attention_mask: torch.Tensor,
                   completion_mask: torch.Tensor) -> torch.Tensor:
    """Sum of the log-probabilities of the tokens where ``completion_mask`` is 1, per row.
    Positions count from each row's first real token, so left padding changes nothing."""
    positions = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    logits = model(input_ids=sequences, attention_mask=attention_mask, position_ids=positions,
                   use_cache=False).logits[:, :-1]
    token_logps = -F.cross_entropy(logits.float().transpose(1, 2), sequences[:, 1:], reduction="none")
    return (token_logps * completion_mask[:, 1:]).sum(dim=1)


class PolicySamples(NamedTuple):
    texts: list[str]               # cut at the stop strings
    log_ratio: torch.Tensor        # log π(y|x) - log π_ref(y|x), summed over the sample's tokens
    lengths: torch.Tensor          # tokens per sample, up to and including EOS
    completion_ids: list[list[int]]


def sample_with_kl(model, reference, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, seed: int,
                   stop: Sequence[str] = (), autocast: torch.dtype | None = None) -> PolicySamples:
    """One temperature-1 sample per prompt from ``model``: the texts (cut at ``stop``), each
    sample's log π - log π_ref summed over its tokens (up to and including EOS), and its length in tokens.

    ``autocast``: the mixed precision the trainer runs the policy in (TRL trains in bf16 by
    default, also on CPU); the reference is run in the same, so that equal weights give a KL of 0."""
    encoded = tokenizer(list(prompts), return_tensors="pt", padding=True, padding_side="left",
                        add_special_tokens=False).to(model.device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.random.fork_rng(), torch.inference_mode():  # seeded, and the caller's random state kept
        torch.manual_seed(seed)
        sequences = model.generate(**encoded, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                   max_new_tokens=max_new_tokens, pad_token_id=pad_id)
    width = encoded["input_ids"].shape[1]
    completion = sequences[:, width:]
    ended = (completion == tokenizer.eos_token_id).long()
    keep = (ended.cumsum(dim=1) - ended) == 0  # tokens up to and including the first EOS
    completion_mask = torch.cat([torch.zeros_like(encoded["input_ids"]), keep.long()], dim=1)
    attention_mask = torch.cat([encoded["attention_mask"], keep.long()], dim=1)
    with torch.inference_mode(), torch.autocast(sequences.device.type, dtype=autocast, enabled=autocast is not None):
        log_ratio = (sequence_logps(model, sequences, attention_mask, completion_mask)
                     - sequence_logps(reference, sequences, attention_mask, completion_mask))
    texts = [cut_at_stop(text, stop) for text in tokenizer.batch_decode(completion * keep + pad_id * ~keep,
                                                                         skip_special_tokens=True)]
    return PolicySamples(texts, log_ratio, keep.sum(dim=1), [row[mask].tolist() for row, mask in zip(completion, keep)])


class RewardCurve(TrainerCallback):
    """Every ``every`` optimizer steps (and at step 0): sample the policy on ``prompts`` and
    record the KL estimate, the training (proxy) reward, each gold reward and the length.

    ``rows`` holds one dict per measurement; ``samples`` the texts, for the probe of what the
    policy learned. Rewards follow TRL's convention ``reward(prompts, completions) -> list[float]``.
    """

    def __init__(self, prompts: Sequence[str], proxy: Reward, gold: Mapping[str, Reward], reference, tokenizer, *,
                 every: int = 10, max_new_tokens: int = 48, seed: int = 0, stop: Sequence[str] = ()):
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        self.prompts, self.proxy, self.gold = list(prompts), proxy, dict(gold)
        self.reference, self.tokenizer = reference.eval(), tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.every, self.max_new_tokens, self.seed, self.stop = every, max_new_tokens, seed, tuple(stop)
        self.rows: list[dict] = []
        self.samples: list[dict] = []

    def measure(self, model, step: int, autocast: torch.dtype | None = None) -> dict:
        training = model.training
        self.reference.to(model.device)
        model.eval()
        try:
            texts, log_ratio, lengths, _ = sample_with_kl(model, self.reference, self.tokenizer, self.prompts,
                                                          max_new_tokens=self.max_new_tokens, seed=self.seed,
                                                          stop=self.stop, autocast=autocast)
        finally:
            model.train(training)
        row = {"step": step, "kl": float(log_ratio.mean()), "proxy": _mean(self.proxy(self.prompts, texts)),
               **{f"gold/{name}": _mean(reward(self.prompts, texts)) for name, reward in self.gold.items()},
               "length_tokens": float(lengths.float().mean()),
               "length_chars": sum(len(text) for text in texts) / len(texts)}
        self.rows.append(row)
        self.samples += [{"step": step, "prompt": p, "completion": t} for p, t in zip(self.prompts, texts)]
        return row

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not self.rows:
            self.measure(model, 0, _mixed_precision(args))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self.measure(model, state.global_step, _mixed_precision(args))

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def _mixed_precision(args) -> torch.dtype | None:
    return torch.bfloat16 if getattr(args, "bf16", False) else torch.float16 if getattr(args, "fp16", False) else None


def _mean(values) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values)
