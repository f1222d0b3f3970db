"""The torch-free core every exporter and runtime shares: graph I/O specs (`specs`), manifests
(`manifest`), output-folder checks (`folders`), the numpy resize (`resize`), the parity gate (`parity`),
calibration images (`calibration`), vocabulary files (`vocab`) and version / hash records (`versions`).
"""
