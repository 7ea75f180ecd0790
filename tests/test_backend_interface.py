"""Every engine implements all of LabelBackend, so callers never ask what an engine offers; and the
HTTP backend (a client of a remote server) loads no torch. Classes are inspected, no model is loaded."""

import ast
import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typing_extensions
from fakes import FakeBackend

from rlaif.backends.base import LabelBackend
from rlaif.backends.http_backend import OpenAICompatibleBackend
from rlaif.dry_run import RecordingBackend
from rlaif.score_cache import CachedBackend

REPO = Path(__file__).resolve().parents[1]
MEMBERS = sorted(typing_extensions.get_protocol_members(LabelBackend))


def run_python(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter, so modules imported by other tests do not count."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_the_http_backend_loads_neither_torch_nor_transformers():
    run = run_python("""
        import sys
        import rlaif, rlaif.backends.http_backend
        print(sorted(name for name in ("torch", "transformers") if name in sys.modules))
    """)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_the_vllm_backend_module_imports_without_vllm():
    run = run_python("""
        import sys
        sys.modules["vllm"] = None  # as if not installed: importing it raises ImportError
        from rlaif.backends.vllm_backend import VLLMBackend
        print(VLLMBackend.__name__)
    """)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "VLLMBackend"


def backend_classes():
    from rlaif.backends.transformers_backend import TransformersBackend
    from rlaif.backends.vllm_backend import VLLMBackend

    return [TransformersBackend, OpenAICompatibleBackend, VLLMBackend, CachedBackend, RecordingBackend, FakeBackend]


def set_in_init(cls) -> set[str]:
    """Attributes ``__init__`` assigns on ``self`` (instance attributes a class does not show)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls.__init__)))
    targets = [node.targets if isinstance(node, ast.Assign) else [node.target]
               for node in ast.walk(tree) if isinstance(node, (ast.Assign, ast.AnnAssign))]
    names = set()
    for target in (t for group in targets for t in group):
        for part in target.elts if isinstance(target, ast.Tuple) else [target]:
            if isinstance(part, ast.Attribute) and isinstance(part.value, ast.Name) and part.value.id == "self":
                names.add(part.attr)
    return names


def parameters(function) -> list[tuple[str, object]]:
    return [(p.name, p.kind) for p in inspect.signature(function).parameters.values()]


def test_the_protocol_declares_what_the_labeler_and_the_direct_scorer_use():
    assert set(MEMBERS) == {"label_logprobs", "generate", "chat_prompt", "fingerprint", "count_tokens",
                            "continuations", "max_prompt_tokens", "pairs_per_step"}


@pytest.mark.parametrize("cls", backend_classes(), ids=lambda cls: cls.__name__)
def test_every_backend_has_every_member_of_the_protocol(cls):
    for name in MEMBERS:
        declared = inspect.getattr_static(LabelBackend, name)
        if isinstance(declared, property):  # a value: a class attribute, a property, or set in __init__
            assert hasattr(cls, name) or name in set_in_init(cls), f"{cls.__name__} has no {name}"
            assert not inspect.isfunction(inspect.getattr_static(cls, name, None)), f"{cls.__name__}.{name}"
        else:  # a method, taking the same arguments
            method = inspect.getattr_static(cls, name, None)
            assert inspect.isfunction(method), f"{cls.__name__} has no method {name}"
            assert parameters(method) == parameters(declared), f"{cls.__name__}.{name}"


def test_the_cache_forwards_every_member_it_does_not_cache(tmp_path):
    fake = FakeBackend(max_prompt_tokens=77)
    cached = CachedBackend(fake, tmp_path / "cache.sqlite")
    assert isinstance(fake, LabelBackend) and isinstance(cached, LabelBackend)
    assert (cached.max_prompt_tokens, cached.pairs_per_step) == (77, fake.pairs_per_step)
    assert cached.count_tokens(["a b c"]) == fake.count_tokens(["a b c"])
    assert cached.continuations("Score=", ["1", "10"]) == fake.continuations("Score=", ["1", "10"])
    with pytest.raises(AttributeError):
        cached.calls  # noqa: B018  the engine's own attributes are at .backend, not passed through
    cached.close()


def test_the_fake_splits_digits_after_the_prompt_as_smollm2_does():
    one, ten = FakeBackend().continuations("Score (1-10)=", ["1", "10"])
    assert ten.prompt_ids == one.prompt_ids and ten.label_ids[:1] == one.label_ids and len(ten.label_ids) == 2
    assert len(one.prompt_ids) == FakeBackend().count_tokens(["Score (1-10)="])[0]


def test_no_caller_sniffs_for_optional_backend_features():
    sniffing = re.compile(r"\b(getattr|hasattr)\((self\.)?_?backend\b")
    found = [f"{path.relative_to(REPO)}:{number}" for path in sorted((REPO / "rlaif").rglob("*.py"))
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
             if sniffing.search(line)]
    assert found == []
