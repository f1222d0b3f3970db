"""`zeroseg-bench gpu`: the one-call GPU check (kernels compiled, fused head, engines), and its dry run.

See `zeroseg.bench.gpu.run` for the steps, the budget and the outputs, and docs/benchmarks.md ("GPU
check") for the command sequence on a GPU machine.
"""

from zeroseg.bench.gpu.run import NO_CUDA, STEPS, GpuSettings, run_gpu_check

__all__ = ["NO_CUDA", "STEPS", "GpuSettings", "run_gpu_check"]
