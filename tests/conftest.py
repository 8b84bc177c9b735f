import os

# Triton kernels run on the CPU through Triton's interpreter; must be set before triton is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest  # noqa: E402


@pytest.fixture
def one_thread():
    """Torch on one CPU thread for the test: small graphs and models are as fast on one, and on a
    shared CPU several threads that wait for each other make them tens of times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
