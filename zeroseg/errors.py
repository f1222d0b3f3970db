"""The one exception type that reaches users.

A `ZerosegError` is a problem with the user's input or environment (a missing file, a bad flag, a
checkpoint from another program). The CLIs print its message as one line, exit with status 2 and
show no traceback; anything else is a bug and keeps its traceback.
"""


class ZerosegError(Exception):
    """A user-facing error whose message names the problem and the fix, in one line."""
