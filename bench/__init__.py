"""zeroseg's benchmarks (`zeroseg-bench`).

    cli.py          `zeroseg-bench` and its commands
    compare/        the default command: every backend side by side (backends, their exported bundles,
                    measuring, rows, the table and plot)
    latency.py      `latency`: per-stage latency of the inference pipeline
    throughput.py   `train` and `cache`: training-step and teacher-cache throughput
    head_bench.py   `head`: the inference head, PyTorch reference vs fused Triton kernels
    serve_load.py   `serve`: load and faults against `zeroseg serve`
    env.py          the environment block every result carries (`env`)
    common.py       shared argument checks, devices, tables and JSON results
    timing.py       synchronised timed samples and their distribution
    memory.py       resident-set high-water marks and GPU allocator peaks

Importing this package sets `OMP_WAIT_POLICY=PASSIVE` unless the variable is already set: PyTorch's
OpenMP workers otherwise spin-wait between parallel regions, which on a shared machine with few
cores made 2-thread eager runs several times slower (README, "Benchmarks"). OpenMP reads it when
torch loads, so it only takes effect when `zeroseg.bench` is imported before torch, as the
`zeroseg-bench` console script does; every result records the value in its environment block.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
