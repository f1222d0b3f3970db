"""Scale-out for ZeroSeg: `zeroseg segment-dataset` (Ray Data) and `zeroseg serve` (Ray Serve).

    model       `ModelSpec`: which checkpoint or exported bundle to run, picklable to Ray workers
    sources     the images of a data set: a folder (recursive), tar shards or a list file
    dataset     segmenting a data set in-process or on a Ray actor pool, resumable, with an index
    protocol    the HTTP contract of `POST /segment`: parsing, validation, encoding (no Ray)
    app         the Ray Serve deployment (batched with `@serve.batch`) and its start/stop helpers
    cluster     connecting to (or starting) Ray, pinned to 127.0.0.1 for a local cluster

Importing this package imports no Ray: only `cluster`, `app` and `dataset_ray` do, when called.
"""
