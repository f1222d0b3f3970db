"""`zeroseg-export`: ONNX / TensorRT / AOTInductor exporters (not built yet)."""

from __future__ import annotations

import sys


def main() -> None:
    """Console entry point: the exporters are a later issue."""
    print("zeroseg-export: not built yet (the export issue has not landed)", file=sys.stderr)
    sys.exit(2)
