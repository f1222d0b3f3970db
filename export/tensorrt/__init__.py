"""TensorRT: engines of the image encoder (`export`: profiles, precision graphs, the build, engine.json)
and their segmenter (`runtime`)."""
