"""The hidden state inside what a hooked component's forward returns (a tensor, or a tuple that
starts with one, as transformers 4 blocks did)."""

from __future__ import annotations

from typing import Any

import torch

from alignez_eval.errors import ArchitectureError


def hidden_of(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise ArchitectureError(
        f"cannot edit a component whose forward returns {type(output).__name__}; "
        "expected a tensor or a tuple starting with one (try component=mlp)"
    )


def with_hidden(output: Any, x: torch.Tensor) -> Any:
    if isinstance(output, torch.Tensor):
        return x
    return (x, *output[1:])
