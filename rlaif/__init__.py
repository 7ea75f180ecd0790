"""rlaif: AI-feedback preference labeling.

    from rlaif import load_pairs, PromptTemplate, TransformersBackend, label_pairs, summarize

The pipeline's entry points and every error a caller may need to catch. Engines
(torch, transformers, vLLM, httpx) load only when a backend is asked for.
"""

from rlaif.analysis.report import analyze, format_report, summarize
from rlaif.backends.base import LabelBackend, LabelTokenError
from rlaif.backends.model_files import ModelFileError
from rlaif.backends.models import DEFAULT_MODEL, resolve_model
from rlaif.backends.next_token import MissingLogprobsError
from rlaif.config_files import ConfigError
from rlaif.direct_scores import DirectScorer, score_pairs
from rlaif.file_writes import WriteError
from rlaif.label_store import StoreError, read_labels, to_dataset
from rlaif.labeler import label_pairs
from rlaif.loaders import load_pairs
from rlaif.output_lock import OutputInUseError
from rlaif.pairs import TIE, DataError, PreferencePair
from rlaif.pride import label_pairs_pride
from rlaif.prompting import Prompting
from rlaif.score_cache import CachedBackend, CacheError, CacheLockedError
from rlaif.shards import merge_shards
from rlaif.soft_labels import swap_average
from rlaif.templates import PromptTemplate, TemplateError, list_tasks

#: The one place the version is written (pyproject.toml reads it from here).
__version__ = "0.1.0"

_LAZY = {
    "HTTPBackendError": "rlaif.backends.http_backend",
    "OpenAICompatibleBackend": "rlaif.backends.http_backend",
    "RemoteReward": "rlaif.training.rewards",
    "TransformersBackend": "rlaif.backends.transformers_backend",
    "VLLMBackend": "rlaif.backends.vllm_backend",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rlaif' has no attribute {name!r}")


__all__ = [
    # entry points
    "CachedBackend", "DEFAULT_MODEL", "DirectScorer", "LabelBackend", "OpenAICompatibleBackend", "PreferencePair",
    "PromptTemplate", "Prompting", "RemoteReward", "TIE", "TransformersBackend", "VLLMBackend", "analyze",
    "format_report", "label_pairs", "label_pairs_pride", "list_tasks", "load_pairs", "merge_shards", "read_labels",
    "resolve_model", "score_pairs", "summarize", "swap_average", "to_dataset",
    # errors
    "CacheError", "CacheLockedError", "ConfigError", "DataError", "HTTPBackendError", "LabelTokenError",
    "MissingLogprobsError", "ModelFileError", "OutputInUseError", "StoreError", "TemplateError", "WriteError",
]
