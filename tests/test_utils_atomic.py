"""`zeroseg.utils.atomic`: a write through a temporary file that fails keeps its own error."""

from __future__ import annotations

from pathlib import Path

import pytest

from zeroseg.errors import ZerosegError
from zeroseg.utils.atomic import atomic_path

pytestmark = pytest.mark.usefixtures("one_thread")


def test_failed_cleanup_keeps_the_original_error(tmp_path, monkeypatch):
    real_unlink = Path.unlink

    def read_only_unlink(self, missing_ok=False):
        if ".tmp-" in self.name:
            raise OSError(30, "Read-only file system")
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", read_only_unlink)
    with pytest.raises(ValueError, match="the body's own error"), atomic_path(tmp_path / "out.json"):
        raise ValueError("the body's own error")
    with pytest.raises(ZerosegError, match="cannot write"), atomic_path(tmp_path / "f.bin") as tmp:
        raise OSError(28, "No space left on device", str(tmp))
