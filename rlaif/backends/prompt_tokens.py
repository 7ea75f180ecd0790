"""A Hugging Face tokenizer as every backend uses it: the same token ids, label
continuations and chat wrapping whichever engine scores them, so engines agree."""

from __future__ import annotations

from collections.abc import Sequence

from rlaif.backends.label_tokens import Continuation, continuation


class PromptTokens:
    """Encodes prompts (no second BOS), finds label continuations, wraps messages in the chat template."""

    def __init__(self, tokenizer, name: str):
        self.tokenizer, self.name = tokenizer, name

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids; no second BOS when the text (a chat-formatted prompt) already starts with it."""
        bos = self.tokenizer.bos_token
        return [self.tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]
                for text in texts]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.encode(texts)]

    def continuations(self, prompt: str, labels: Sequence[str]) -> list[Continuation]:
        return [continuation(lambda text: self.encode([text])[0], prompt, label) for label in labels]

    def chat_prompt(self, message: str, reply_prefix: str) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"{self.name} has no chat template; label without --chat-template")
        wrapped = self.tokenizer.apply_chat_template([{"role": "user", "content": message}],
                                                     tokenize=False, add_generation_prompt=True)
        return wrapped + reply_prefix


def load_tokenizer(name: str, revision: str | None = None):
    """The tokenizer of a catalogue name, local folder, local .gguf file or hub name (see ``resolve_model``)."""
    from transformers import AutoTokenizer

    from rlaif.backends.models import resolve_model

    resolved = resolve_model(name)
    kwargs = {"revision": revision} if revision else {}
    if resolved.gguf_file:
        kwargs["gguf_file"] = resolved.gguf_file
    return AutoTokenizer.from_pretrained(resolved.path, **kwargs)
