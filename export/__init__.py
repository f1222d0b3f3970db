"""ZeroSeg's exporters and runtimes (`zeroseg-export`): ONNX graphs, a parity gate, int8, ONNX Runtime.

`zeroseg.export.OnnxSegmenter` (the runtime) needs only numpy, onnxruntime and pillow; the exporter
(`zeroseg.export.export_onnx`) needs torch. Both are imported on first use (PEP 562), so importing
this package loads neither.
"""

from importlib import import_module

_LAZY = {
    "OnnxSegmenter": "zeroseg.export.runtime",
    "export_onnx": "zeroseg.export.bundle",
    "ExportSettings": "zeroseg.export.onnx",
    "BundleManifest": "zeroseg.export.manifest",
    "read_manifest": "zeroseg.export.manifest",
    "TRTSegmenter": "zeroseg.export.trt_runtime",
    "AOTISegmenter": "zeroseg.export.aoti_runtime",
    "export_aoti": "zeroseg.export.aoti",
}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zeroseg.export' has no attribute {name!r}")
