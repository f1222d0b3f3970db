"""`zeroseg.classes`: class files and `--labels` strings, with their synonym separators."""

from __future__ import annotations

from zeroseg.classes import parse_class_names, read_class_file


def test_class_files_accept_both_synonym_separators(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("background\nsofa, couch\ntv|monitor | screen\n", encoding="utf-8")
    assert read_class_file(path) == [["background"], ["sofa", "couch"], ["tv", "monitor", "screen"]]
    assert parse_class_names("cat|kitty; dog") == [["cat", "kitty"], ["dog"]]
