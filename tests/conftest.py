"""Test-wide settings.

Triton kernels are tested on the CPU through Triton's interpreter, which must be switched on before
`triton` is first imported; set ZEROSEG_TEST_GPU=1 to run them compiled on a CUDA device instead.
"""

import os

if os.environ.get("ZEROSEG_TEST_GPU") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

# under pytest-xdist each worker gets one core; alone, the suite uses two
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))
