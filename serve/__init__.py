"""Scale-out for ZeroSeg: `zeroseg segment-dataset` (Ray Data) and `zeroseg serve` (Ray Serve).

    model.py        `ModelSpec`: which checkpoint or exported bundle to run, picklable to Ray workers
    cluster.py      connecting to (or starting) Ray, pinned to 127.0.0.1 for a local cluster
    dataset/        `zeroseg segment-dataset`: the images of a data set (`sources`), one batch segmented
                    and written (`writer`), the whole run in-process or on a Ray actor pool
                    (`run`, `ray_pool`), resumable, with an index
    web/            `zeroseg serve`: the HTTP contract of `POST /segment` (`protocol`, no Ray), the Ray
                    Serve deployment batched with `@serve.batch` and its start/stop helpers (`app`),
                    a standard-library client (`client`)

`model` and `cluster` are shared by both sides. Importing this package imports no Ray: only
`cluster`, `web.app` and `dataset.ray_pool` do, when called.
"""
