"""`zeroseg-bench [CKPT|BUNDLE]` (the default `compare` command): every backend side by side in one run.

The backends and how each is built (`backends`), the bundles exported for them into the cache
(`engines`), what is measured per backend (`measure`), the interleaved run (`run`), the JSON rows
(`rows`) and the table and plot for people (`report`).
"""
