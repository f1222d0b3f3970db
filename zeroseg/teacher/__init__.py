"""The frozen CLIP teacher: the open_clip wrapper and teacher files (`clip`), the 30 grid views
(`views`) and the memory-mapped feature cache (`cache`)."""
