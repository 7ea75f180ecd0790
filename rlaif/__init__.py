"""rlaif: AI-feedback preference labeling.

    from rlaif import load_pairs, PromptTemplate, TransformersBackend, label_pairs, summarize
"""

from rlaif.backends.base import LabelBackend, LabelTokenError
from rlaif.label_store import read_labels, to_dataset
from rlaif.direct_scores import DirectScorer
from rlaif.labeler import label_pairs, score_pairs
from rlaif.loaders import load_pairs
from rlaif.models import DEFAULT_MODEL, resolve_model
from rlaif.pairs import TIE, DataError, PreferencePair
from rlaif.prompting import Prompting
from rlaif.pride import label_pairs_pride
from rlaif.report import analyze, format_report, summarize
from rlaif.score_cache import CachedBackend
from rlaif.shards import merge_shards
from rlaif.soft_labels import swap_average
from rlaif.templates import PromptTemplate, list_tasks

__version__ = "0.1.0"


def __getattr__(name):
    # torch, transformers, vllm and httpx load only when a backend is asked for.
    if name == "TransformersBackend":
        from rlaif.backends.transformers_backend import TransformersBackend
        return TransformersBackend
    if name == "VLLMBackend":
        from rlaif.backends.vllm_backend import VLLMBackend
        return VLLMBackend
    if name == "OpenAICompatibleBackend":
        from rlaif.backends.http_backend import OpenAICompatibleBackend
        return OpenAICompatibleBackend
    raise AttributeError(f"module 'rlaif' has no attribute {name!r}")


__all__ = ["analyze", "CachedBackend", "DEFAULT_MODEL", "TIE", "DataError", "DirectScorer", "Prompting", "LabelBackend",
           "LabelTokenError", "OpenAICompatibleBackend", "PreferencePair", "PromptTemplate", "TransformersBackend",
           "VLLMBackend", "format_report", "label_pairs", "label_pairs_pride", "list_tasks", "load_pairs",
           "merge_shards", "read_labels", "resolve_model", "score_pairs", "summarize", "swap_average", "to_dataset"]
