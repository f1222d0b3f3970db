"""ShapeWorld, the project's small world where label-free training is proven: scenes in memory
(`scenes`), data sets on disk (`write`), the tiny CLIP teacher (`teacher`), the demo picture (`demo`),
the bundled assets (`bundled`) and the proof script that builds them (`proof`)."""
