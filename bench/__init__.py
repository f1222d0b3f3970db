"""zeroseg's benchmarks (`zeroseg-bench`).

Importing this package sets `OMP_WAIT_POLICY=PASSIVE` unless the variable is already set: PyTorch's
OpenMP workers otherwise spin-wait between parallel regions, which on a shared machine with few
cores made 2-thread eager runs several times slower (README, "Benchmarks"). OpenMP reads it when
torch loads, so it only takes effect when `zeroseg.bench` is imported before torch, as the
`zeroseg-bench` console script does; every result records the value in its environment block.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
