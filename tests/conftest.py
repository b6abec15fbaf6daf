"""Test-wide fixtures."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """The tensors here are tiny: one intra-op thread avoids OpenMP overhead and contention on
    shared CPUs (up to 100x slower with 2 busy cores). Restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
