"""Inference: label spaces and results (`labels`), the staged pipeline shared by every method
(`base`) and its PyTorch text and image stages (`torch_base`), the ZeroSeg `Segmenter`
(`segmenter`), the MaskCLIP baseline (`maskclip`), a factory for both (`factory`) and label PNGs /
overlays (`visualize`)."""
