"""`zeroseg serve`: the HTTP contract of `POST /segment` as plain functions (`protocol`, no Ray), the Ray
Serve deployment and its start/stop helpers (`app`, imports Ray) and a standard-library client (`client`)."""
