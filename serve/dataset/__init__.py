"""`zeroseg segment-dataset`: the images of a data set (`sources`), one batch segmented and written
(`writer`), the whole run in-process (`run`) or on a Ray Data actor pool (`ray_pool`, imports Ray)."""
