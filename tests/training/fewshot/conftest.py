import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks on a shared 2-core machine: more threads only contend (a 10x slowdown under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
