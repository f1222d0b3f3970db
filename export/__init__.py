"""ZeroSeg's exporters and runtimes (`zeroseg-export`), one subpackage per engine over a torch-free core.

    core/           graph I/O specs, manifests, output-folder checks, the numpy resize, the parity gate,
                    calibration images, vocabulary files, version records (torch-free to import)
    graphs.py       the traceable torch wrappers every exporter shares
    onnx/           ONNX export, bundles, int8, the ONNX Runtime segmenter
    openvino/       the OpenVINO segmenter of an ONNX bundle
    aoti/           AOTInductor packages, their segmenter and the C++ runner (cpp/)
    executorch/     ExecuTorch programs (XNNPACK, fp32 + int8), their segmenter and the edge C++ runner (cpp/)
    tensorrt/       TensorRT engines of the image encoder and their segmenter
    triton_server/  Triton Inference Server model repositories of a bundle
    cli/            `zeroseg-export`

`zeroseg.export.OnnxSegmenter` (the runtime) needs only numpy, onnxruntime and pillow; the exporter
(`zeroseg.export.export_onnx`) needs torch. Every public name is imported on first use (PEP 562), so
importing this package loads neither.
"""

from importlib import import_module

_LAZY = {
    "OnnxSegmenter": "zeroseg.export.onnx.runtime",
    "export_onnx": "zeroseg.export.onnx.bundle",
    "ExportSettings": "zeroseg.export.onnx.export",
    "BundleManifest": "zeroseg.export.core.manifest",
    "read_manifest": "zeroseg.export.core.manifest",
    "OpenVINOSegmenter": "zeroseg.export.openvino.runtime",
    "TRTSegmenter": "zeroseg.export.tensorrt.runtime",
    "AOTISegmenter": "zeroseg.export.aoti.runtime",
    "export_aoti": "zeroseg.export.aoti.export",
    "ExecuTorchSegmenter": "zeroseg.export.executorch.runtime",
    "export_executorch": "zeroseg.export.executorch.export",
}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zeroseg.export' has no attribute {name!r}")
