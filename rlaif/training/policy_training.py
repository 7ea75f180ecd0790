"""Policy training through TRL: online RL against a reward callable, and DPO on labels.

Online (``train_online``): GRPO or RLOO, with the KL penalty to the starting policy (beta),
against any reward that follows TRL's convention ``reward(prompts, completions) -> list[float]``
(a saved ``RewardModel``, a ``DirectScorer``): no reward-specific code here.

DPO (``train_dpo``): hard labels (human, or the AI label rounded) train with TRL's own ``DPOTrainer``.
Soft AI labels keep the labeler's confidence: ``SoftLabelDPOTrainer`` minimises the
cross-entropy between the pair's target probability p and the DPO preference model,

    loss = -[p log σ(βΔ) + (1 - p) log σ(-βΔ)],   Δ = log-ratio(chosen) - log-ratio(rejected),

which is conservative DPO (Mitchell 2023) with a per-pair smoothing ε = 1 - p. Why this
form: its optimum is βΔ = logit(p), so a pair the labeler calls 0.52 moves the policy a
little and a pair it calls 0.95 a lot; a hard label would push both to infinity. TRL 1.16's
sigmoid loss has no smoothing and its other losses take one ε for the whole run, hence the
subclass. Requires ``rlaif[rl]`` (trl==1.16.0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from datasets import Dataset
from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

from rlaif.training.preference_targets import PreferenceTarget


def dpo_dataset(targets: Sequence[PreferenceTarget]) -> Dataset:
    """TRL's preference columns (prompt, chosen, rejected; plain text, the HH way: the prompt
    ends with "Assistant:" and responses begin with a space) plus ``target``, P(chosen is
    preferred) >= 0.5. The chosen response is the one the target favours."""
    rows = {"prompt": [], "chosen": [], "rejected": [], "target": []}
    for target in targets:
        first_wins = target.p >= 0.5
        rows["prompt"].append(target.context)
        rows["chosen"].append(target.response_1 if first_wins else target.response_2)
        rows["rejected"].append(target.response_2 if first_wins else target.response_1)
        rows["target"].append(float(target.p if first_wins else 1.0 - target.p))
    return Dataset.from_dict(rows)


class _WithTargets:
    """Wraps TRL's preference collator so that each batch also carries the pairs' targets."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples):
        batch = self.collator(examples)
        batch["target"] = torch.tensor([example["target"] for example in examples], dtype=torch.float32)
        return batch


class SoftLabelDPOTrainer(DPOTrainer):
    """``DPOTrainer`` whose loss takes a per-pair target probability (the ``target`` column).

    With every target 1 it is TRL's sigmoid DPO loss (tested). Supports the plain setup
    the experiments use: a full (non-PEFT) model, a reference model, no precomputed
    reference log-probs, loss_type "sigmoid". It computes the full logits (TRL's fused
    LM head is skipped), which costs memory with large vocabularies and batches and is faster
    on small CPUs (README, policy training).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.loss_types != ["sigmoid"] or self.precompute_ref_logps or self.ref_model is None:
            raise ValueError("SoftLabelDPOTrainer needs loss_type='sigmoid', precompute_ref_log_probs=False and a "
                             "reference model")
        self.data_collator = _WithTargets(self.data_collator)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if "target" not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, "target"]

    @staticmethod
    def _completion_logps(model, inputs) -> torch.Tensor:
        """Sum of the completion tokens' log-probabilities, per row of the [chosen; rejected] batch."""
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False).logits
        labels = inputs["input_ids"][:, 1:]
        token_logps = -F.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels, reduction="none")
        return (token_logps * inputs["completion_mask"][:, 1:]).sum(dim=1)

    def _compute_loss(self, model, inputs, return_outputs):
        if return_outputs:
            raise ValueError("SoftLabelDPOTrainer does not return outputs")
        mode = "train" if self.model.training else "eval"
        target = inputs["target"].to(self.accelerator.device)
        with torch.no_grad():
            reference = self._completion_logps(self.ref_model, inputs)
        logratios = self._completion_logps(model, inputs) - reference
        chosen, rejected = logratios.chunk(2, dim=0)
        margin = self.beta * (chosen - rejected)
        loss = -(target * F.logsigmoid(margin) + (1 - target) * F.logsigmoid(-margin)).mean()
        for name, value in (("rewards/margins", margin.detach().mean()),
                            ("rewards/accuracies", (margin.detach() > 0).float().mean()),
                            ("rewards/chosen", self.beta * chosen.detach().mean()),
                            ("rewards/rejected", self.beta * rejected.detach().mean())):
            self._metrics[mode][name].append(self.accelerator.gather_for_metrics(value).mean().item())
        return loss


ONLINE_TRAINERS = {"grpo": (GRPOConfig, GRPOTrainer), "rloo": (RLOOConfig, RLOOTrainer)}


def _common_arguments(output_dir: str | Path, settings: dict) -> dict:
    """Trainer arguments every run here shares: no checkpoints, no trackers, a log entry per
    step, the CPU when no GPU is there (settings may override any of them).

    On CPU, fp32 without activation checkpointing: TRL turns on bf16 autocast and gradient
    checkpointing by default, and on a CPU without bf16 matrix units both only cost time (README,
    policy training). On GPUs TRL's defaults stay."""
    on_cpu = not torch.cuda.is_available()
    defaults = {"output_dir": str(output_dir), "report_to": "none", "save_strategy": "no", "logging_steps": 1,
                "use_cpu": on_cpu}
    if on_cpu:
        defaults.update(bf16=False, gradient_checkpointing=False)
    return {**defaults, **settings}


def _log(trainer, key: str) -> pd.DataFrame:
    return pd.DataFrame([entry for entry in trainer.state.log_history if key in entry])


def _trained_model(trainer):
    """The trained model as a plain model: without the mixed-precision wrapper accelerate puts
    on its forward (TRL trains in bf16 by default; here on CPU only when asked), so that it samples in its own
    dtype, like the untrained policy it is compared with."""
    return trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)


def train_online(policy: str, reward: Callable, prompts: Sequence[str], *, trainer: str = "grpo",
                 settings: dict | None = None, output_dir: str | Path = "trainer", callbacks: Sequence = ()):
    """Train ``policy`` (a Hugging Face folder or hub name: the trainer reloads the reference
    model from it) on ``prompts`` against ``reward``. ``settings``: fields of TRL's GRPOConfig
    or RLOOConfig. Returns the trained model and the per-step log (reward, kl, lengths...)."""
    if trainer not in ONLINE_TRAINERS:
        raise ValueError(f"trainer must be one of {sorted(ONLINE_TRAINERS)}, got {trainer!r}")
    config_class, trainer_class = ONLINE_TRAINERS[trainer]
    if not getattr(reward, "__name__", None):
        raise ValueError("the reward callable needs a __name__: TRL logs its reward under it")
    run = trainer_class(model=policy, reward_funcs=reward,
                        args=config_class(**_common_arguments(output_dir, settings or {})),
                        train_dataset=Dataset.from_dict({"prompt": list(prompts)}), callbacks=list(callbacks))
    run.train()
    return _trained_model(run), _log(run, "reward")


def train_dpo(policy: str, targets: Sequence[PreferenceTarget], *, soft: bool, settings: dict | None = None,
              output_dir: str | Path = "trainer", callbacks: Sequence = ()):
    """DPO of ``policy`` on ``targets``: TRL's sigmoid loss on the hard direction of each pair,
    or (``soft``) ``SoftLabelDPOTrainer`` with each pair's probability. ``settings``: fields of
    TRL's DPOConfig. Returns the trained model and the per-step log (loss, reward margins...)."""
    dataset = dpo_dataset(targets)
    if not soft:
        dataset = dataset.remove_columns("target")
    trainer_class = SoftLabelDPOTrainer if soft else DPOTrainer
    run = trainer_class(model=policy, args=DPOConfig(**_common_arguments(output_dir, settings or {})),
                        train_dataset=dataset, callbacks=list(callbacks))
    run.train()
    return _trained_model(run), _log(run, "loss")
