"""In-process labeling with a transformers causal LM (CPU or GPU).

Label tokens. A candidate label is scored as the continuation of the prompt: the
prompt and ``prompt + label`` are tokenized, and the label must add exactly one
token while leaving the prompt's tokens unchanged. That token is the one the
model would emit after the prompt, so "1" after "=" and "1" after a space are
both scored as the token the model actually produces there. A label that merges
with the end of the prompt, or that needs several tokens (" 1" or "10" in
SmolLM2), raises LabelTokenError instead of being scored wrongly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rlaif.backends.base import LabelTokenError
from rlaif.models import DEFAULT_MODEL, resolve_model

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TransformersBackend:
    """Scores label tokens with one forward pass per prompt, batched with left padding."""

    def __init__(self, model, tokenizer, *, name: str, batch_size: int = 8, source: str = "",
                 revision: str | None = None, max_prompt_tokens: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model, self.tokenizer, self.name, self.batch_size = model.eval(), tokenizer, name, batch_size
        self.source = source or getattr(model.config, "_name_or_path", "")
        self.revision = revision
        #: Longest prompt the model takes (its position limit); the labeler fits prompts to it.
        self.max_prompt_tokens = max_prompt_tokens or getattr(model.config, "max_position_embeddings", None)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            raise ValueError(f"{name}: the tokenizer has neither a pad nor an eos token to pad batches with")

    @classmethod
    def from_pretrained(cls, name: str = DEFAULT_MODEL, *, dtype: str = "float32", device: str = "cpu",
                        batch_size: int = 8, revision: str | None = None,
                        max_prompt_tokens: int | None = None) -> "TransformersBackend":
        """Load by catalogue name, local folder, local .gguf file or hub name (see ``resolve_model``)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        resolved = resolve_model(name)
        kwargs: dict[str, Any] = {"revision": revision} if revision else {}
        if resolved.gguf_file:
            kwargs["gguf_file"] = resolved.gguf_file
        tokenizer = AutoTokenizer.from_pretrained(resolved.path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=DTYPES[dtype], **kwargs).to(device)
        return cls(model, tokenizer, name=name, batch_size=batch_size, source=resolved.describe(),
                   revision=revision, max_prompt_tokens=max_prompt_tokens)

    # ---------------------------------------------------------------- tokens

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids; no second BOS when the text (a chat-formatted prompt) already starts with it."""
        bos = self.tokenizer.bos_token
        return [self.tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]
                for text in texts]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self._encode(texts)]

    def label_token_ids(self, prompt_ids: list[int], prompt: str, labels: Sequence[str]) -> list[int]:
        """The single token each label adds after ``prompt`` (see the module docstring for the rule)."""
        ids = []
        for label, joined in zip(labels, self._encode([prompt + label for label in labels])):
            if len(joined) != len(prompt_ids) + 1 or joined[:len(prompt_ids)] != prompt_ids:
                added = self.tokenizer.convert_ids_to_tokens(joined[len(prompt_ids) - 1:])
                raise LabelTokenError(
                    f"label {label!r} is not one token after this prompt's ending {prompt[-30:]!r} "
                    f"({self.name} tokenizes the end of prompt+label as {added}); "
                    "choose a label and ending that tokenize apart, e.g. 'Preferred Response=' + '1'")
            ids.append(joined[-1])
        return ids

    # ---------------------------------------------------------------- scoring

    @torch.inference_mode()
    def _last_logprobs(self, batch: list[list[int]]) -> torch.Tensor:
        """Log-softmax of the next-token logits after each (left-padded) sequence: [batch, vocab]."""
        width = max(map(len, batch))
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            mask[row, width - len(ids):] = 1
        # Positions count real tokens only, so a left-padded prompt sees the same positions as alone.
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        device = self.model.device
        out = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                         position_ids=position_ids.to(device), logits_to_keep=1, use_cache=False)
        return torch.log_softmax(out.logits[:, -1, :].float(), dim=-1).cpu()

    def label_logprobs(self, prompts: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        """log P(label | prompt) over the full vocabulary, [len(prompts), len(labels)]."""
        encoded = self._encode(prompts)
        label_ids = [self.label_token_ids(ids, prompt, labels) for ids, prompt in zip(encoded, prompts)]
        result = np.empty((len(prompts), len(labels)), dtype=np.float64)
        # Similar lengths batched together waste less compute on padding; results go back in order.
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            logprobs = self._last_logprobs([encoded[i] for i in rows])
            index = torch.tensor([label_ids[i] for i in rows])
            result[rows] = torch.gather(logprobs, 1, index).double().numpy()
        return result

    def chat_prompt(self, message: str, reply_prefix: str) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"{self.name} has no chat template; label without --chat-template")
        wrapped = self.tokenizer.apply_chat_template([{"role": "user", "content": message}],
                                                     tokenize=False, add_generation_prompt=True)
        return wrapped + reply_prefix

    def fingerprint(self) -> dict[str, Any]:
        return {
            "backend": "transformers",
            "model": self.name,
            "model_source": self.source,
            "revision": self.revision,
            "dtype": str(self.model.dtype).removeprefix("torch."),
        }
