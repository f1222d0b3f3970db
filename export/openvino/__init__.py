"""OpenVINO: `runtime.OpenVINOSegmenter` runs an ONNX bundle's graphs with OpenVINO on the CPU."""
