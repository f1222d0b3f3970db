"""ShapeWorld, the project's small world where label-free training is proven: data sets on disk
(`write`; the scenes in memory are `zeroseg.data.scenes`), the tiny CLIP teacher (`teacher`), the demo
picture (`demo`) and the proof script (`proof`) that builds the bundled assets (`zeroseg.bundled`)."""
