"""ONNX: the graphs' export (`export`), bundles gated on parity (`bundle`), int8 (`quantize`, `int8`)
and the torch-free ONNX Runtime segmenter (`runtime`)."""
