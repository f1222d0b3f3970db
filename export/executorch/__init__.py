"""ExecuTorch bundles: `zeroseg-export executorch` (XNNPACK, fp32 and int8), their Python runtime
(`ExecuTorchSegmenter`) and the edge C++ runner (`export/executorch/cpp`, no libtorch)."""
