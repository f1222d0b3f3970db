"""The ZeroSeg student: architecture config and presets (`config`), GroupViT grouping blocks
(`grouping`) and the ViT encoder + MAE decoder + segmentation and global heads (`student`)."""
