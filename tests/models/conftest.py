"""Fixtures for the model tests."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """The model tests run tiny tensors through many small ops, where a second intra-op thread only
    adds synchronisation (5x slower when the CPU is shared); restored afterwards for other packages."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
