"""`zeroseg serve`: the HTTP contract of `POST /segment` as plain functions (`protocol`, its 200 answer in
`answer`; no Ray), the page `GET /` serves (`static`, files under `page/`), the Ray Serve deployment
and its start/stop helpers (`app`, imports Ray) and a standard-library client (`client`)."""
