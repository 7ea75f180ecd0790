"""The plain labeler's two prompts for one pair, as tests compare them with golden files and real models."""

from rlaif.prompting import PairPrompts, Prompting


def build_prompts(pair, template, backend, chat_template, context=None):
    """The prompt in the first order (response 1 shown first) and in the swapped order."""
    builder = PairPrompts(template, backend, chat_template, Prompting())
    first, swapped = builder.first_step(pair, context)
    return builder.label_prompt(*first[2:]), builder.label_prompt(*swapped[2:])
