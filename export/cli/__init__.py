"""`zeroseg-export`: exporters of ZeroSeg checkpoints, one command module per engine over the library.

    zeroseg-export onnx CKPT --out DIR ...        ONNX graphs (+ int8), gated on parity  (cli/onnx.py)
    zeroseg-export trt CKPT|BUNDLE --out DIR ...  a TensorRT engine of the image encoder  (cli/tensorrt.py)
    zeroseg-export aoti CKPT --out DIR ...        an AOTInductor package                  (cli/aoti.py)
    zeroseg-export cpp-build [--out DIR]          the C++ runner of AOTInductor bundles   (cli/aoti.py)
    zeroseg-export executorch CKPT --out DIR ...  an ExecuTorch .pte (XNNPACK, + int8)     (cli/executorch.py)
    zeroseg-export triton BUNDLE --out REPO ...   a Triton model repository               (cli/triton.py)

Each command module exposes `register(app)`; the shared options are in `options`. Bad arguments and
a failed parity gate are one-line errors with exit status 2; nothing is left half-written.
"""

from __future__ import annotations

from zeroseg.export.cli import aoti, executorch, onnx, tensorrt, triton
from zeroseg.utils.console import new_app, run_app

app = new_app(
    "Export ZeroSeg checkpoints, each gated on parity with PyTorch: `onnx` (image, text and end-to-end "
    "graphs, optionally int8, with a manifest), `trt` (a TensorRT engine), `aoti` (an AOTInductor "
    "package; `cpp-build` builds its C++ runners), `executorch` (an ExecuTorch program for edge "
    "devices) and `triton` (a Triton model repository of a bundle)."
)


@app.callback()
def _main() -> None:
    """Exporters of ZeroSeg checkpoints."""


for _module in (onnx, tensorrt, aoti, executorch, triton):
    _module.register(app)


def main() -> None:
    """Console entry point."""
    run_app(app)
