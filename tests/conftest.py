"""Shared test setup: GPU tests are skipped without CUDA, and without CUDA the Triton kernels
run under Triton's interpreter (set before anything imports triton)."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _scattered_resets(t_len: int, batch: int, seed: int = 2) -> torch.Tensor:
    """[T, B] bool episode starts at scattered (t, b), including the first and last cell."""
    g = torch.Generator().manual_seed(seed)
    is_first = torch.rand(t_len, batch, generator=g) < 0.15
    is_first[0, 0] = True
    is_first[t_len - 1, batch - 1] = True
    return is_first


@pytest.fixture
def scattered_resets():
    """The function ``(t_len, batch) -> is_first`` with resets at scattered (t, b)."""
    return _scattered_resets


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
