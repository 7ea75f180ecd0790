"""Mixed precision for labeling on CPU: the body's matrix products in bf16, the labels read in fp32.

A CPU with bf16 matrix instructions (AMX tiles, or AVX-512 bf16 dot products) multiplies
bf16 matrices several times faster than fp32 ones, and the weights take half the memory
traffic. But a labeler's soft label is a small difference between two logits near 20-30:
read from bf16 logits (8-bit mantissa) it is quantized to a handful of values, and many
pairs come out exactly 0.5. So only the linear layers of the decoder layers run in bf16;
everything that accumulates or reads stays fp32: the residual stream (each layer's output
is added to it in fp32), the norms, attention's softmax, the key/value cache, the final
norm and the output layer. See benchmarks/README ("cpu_options.py") for what each choice
costs and how far it moves labels.
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

import torch
from torch import nn

#: /proc/cpuinfo flags of bf16 matrix instructions that torch's oneDNN kernels use, best first.
BF16_MATRIX_FLAGS = ("amx_bf16", "avx512_bf16")


@cache
def bf16_matrix_units(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The CPU's bf16 matrix instruction set (a flag of ``BF16_MATRIX_FLAGS``), or None.

    Read from the kernel's flags, not guessed from the model name. Where they cannot be read
    (not Linux) the answer is None, so the default stays fp32.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        flags = set(next((line for line in Path(cpuinfo).read_text().splitlines() if line.startswith("flags")),
                         "").split())
    except OSError:
        return None
    return next((flag for flag in BF16_MATRIX_FLAGS if flag in flags), None)


def default_dtype(device: str) -> str:
    """The transformers backend's precision when none is asked for: "mixed" on a CPU with bf16 matrix
    units, else "float32" (GPUs, and CPUs where bf16 would be emulated and slower)."""
    return "mixed" if torch.device(device).type == "cpu" and bf16_matrix_units() else "float32"


class Bf16Linear(nn.Module):
    """A linear layer that takes and returns fp32 but multiplies in bf16.

    The weight is stored in bf16; the input is rounded to bf16, the product accumulates in
    fp32 inside the kernel and is rounded to bf16 once, and the bias is added in fp32.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(linear.weight.detach().to(torch.bfloat16), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = nn.functional.linear(x.to(torch.bfloat16), self.weight).float()
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def to_mixed_precision(model: nn.Module) -> nn.Module:
    """``model`` (fp32) with every linear layer of its decoder layers replaced by ``Bf16Linear``, in place.

    The embeddings, norms and output layer keep fp32 (a tied output layer shares the fp32
    input embedding), so the final hidden state and the label logits are computed in fp32.
    """
    if next(model.parameters()).dtype != torch.float32:
        raise ValueError(f"mixed precision starts from an fp32 model, got {next(model.parameters()).dtype}")
    output = model.get_output_embeddings()
    replaced = 0
    for parent in list(model.base_model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and child is not output:
                setattr(parent, name, Bf16Linear(child))
                replaced += 1
    if not replaced:
        raise ValueError(f"{type(model).__name__} has no linear layers in its decoder to run in bf16")
    return model
