import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """RL tests use tiny tensors: one thread avoids OpenMP contention on a shared 2-core machine
    (the trainer sets it too); the previous setting is restored for other test areas."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
