"""Triton Inference Server: model repositories of an exported bundle (`repo`) and their
`config.pbtxt` files and sample requests (`config`)."""
