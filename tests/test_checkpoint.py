"""Checkpoints: exact round trip, weights_only loading, a one-line refusal of every bad file (a flipped
tensor byte fails the checksum), and a failed save that keeps the previous file."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error, write_image
from PIL import Image

from zeroseg.bundled import bundled_checkpoint
from zeroseg.checkpoint import (
    CHECKPOINT_FORMAT,
    FORMAT_VERSION,
    CheckpointConfig,
    load_checkpoint,
    save_checkpoint,
)
from zeroseg.errors import ZerosegError
from zeroseg.infer.segmenter import Segmenter
from zeroseg.model.student import ZeroSegStudent
from zeroseg.text import encode_classes

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = [["cat"], ["dog", "puppy"], ["traffic light"]]


def _touch(path: str) -> None:
    """What a malicious pickle would run on load (it must not)."""
    Path(path).write_text("code ran")


class Payload:
    """An object whose unpickling runs `_touch`: what weights_only=True exists to refuse."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch, (self.marker,))


def test_round_trip_gives_identical_student_and_text(world, tmp_path):
    ckpt = load_checkpoint(world.checkpoint)
    assert ckpt.config == world.config
    assert CheckpointConfig.from_dict(json.loads(json.dumps(ckpt.config.to_dict()))) == ckpt.config
    assert ckpt.student_config == world.student_cfg
    assert ckpt.templates == list(world.config.templates)
    assert ckpt.logit_scale == pytest.approx(world.teacher.logit_scale, rel=1e-6)
    assert ckpt.train_state is None and ckpt.path == world.checkpoint

    original = ZeroSegStudent(world.student_cfg).eval()
    original.load_state_dict(world.student_state)
    loaded = ckpt.build_student()
    assert not loaded.training
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = original.segment(x), loaded.segment(x)
    assert torch.equal(want.segments, got.segments)
    assert torch.equal(want.maps, got.maps)

    want_text = encode_classes(world.teacher.text_encoder(), CLASSES, ckpt.templates)
    got_text = encode_classes(ckpt.build_text_encoder(), CLASSES, ckpt.templates)
    assert torch.equal(want_text, got_text)

    # save -> load -> save again: the same tensors and config
    again = tmp_path / "again.pt"
    save_checkpoint(again, config=ckpt.config, student=ckpt.student, text=ckpt.text)
    reloaded = load_checkpoint(again)
    assert reloaded.config == ckpt.config
    assert reloaded.student.keys() == ckpt.student.keys()
    assert all(torch.equal(reloaded.student[k], ckpt.student[k]) for k in ckpt.student)


def test_loaded_with_weights_only(world, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_checkpoint(world.checkpoint)
    assert calls and all(c.get("weights_only") is True for c in calls)
    # the contract for export and bench: plain torch.load(weights_only=True) reads it, with its header
    payload = real_load(world.checkpoint, weights_only=True)
    assert payload["format"] == CHECKPOINT_FORMAT and payload["version"] == FORMAT_VERSION
    json.loads(payload["config_json"])


def test_train_state_round_trip_and_skip(world, tmp_path):
    ckpt = load_checkpoint(world.checkpoint)
    path = tmp_path / "train.pt"
    state = {"step": 7, "epoch": 1, "rng": {"torch": torch.get_rng_state()}}
    save_checkpoint(path, config=ckpt.config, student=ckpt.student, text=ckpt.text, train_state=state)
    loaded = load_checkpoint(path)
    assert loaded.train_state["step"] == 7 and torch.equal(
        loaded.train_state["rng"]["torch"], state["rng"]["torch"]
    )
    assert load_checkpoint(path, with_train_state=False).train_state is None


def test_config_must_be_json(world, tmp_path):
    ckpt = load_checkpoint(world.checkpoint)
    with pytest.raises(ValueError, match="JSON"):
        bad = ckpt.config.replace(train={"bad": object()})
        save_checkpoint(tmp_path / "x.pt", config=bad, student=ckpt.student, text=ckpt.text)
    assert not (tmp_path / "x.pt").exists()


def test_pickled_code_is_refused_without_running_it(world, tmp_path):
    marker = tmp_path / "ran.txt"
    path = tmp_path / "evil.pt"
    payload = torch.load(world.checkpoint, weights_only=True)
    payload["extra"] = Payload(marker)
    torch.save(payload, path)
    with pytest.raises(ZerosegError, match="pickled Python objects.*refusing") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert not marker.exists()


def _damaged(world, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Bad checkpoint files, each with the words its error must contain."""
    good = world.checkpoint.read_bytes()
    files: dict[str, tuple[bytes | None, str]] = {}

    def write(name: str, data: bytes | None, expect: str) -> None:
        files[name] = (data, expect)

    write("truncated_half.pt", good[: len(good) // 2], "truncated or corrupt")
    write("truncated_head.pt", good[:64], "truncated or corrupt")
    write("empty.pt", b"", "empty")
    write("notes.pt", b"just some text\n", "not a PyTorch file")
    write("image.pt", b"\x89PNG\r\n\x1a\n" + bytes(64), "not a PyTorch file")
    out: dict[str, tuple[Path, str]] = {}
    for name, (data, expect) in files.items():
        (tmp_path / name).write_bytes(data)
        out[name] = (tmp_path / name, expect)

    def saved(name: str, obj, expect: str) -> None:
        torch.save(obj, tmp_path / name)
        out[name] = (tmp_path / name, expect)

    saved("other_program.pt", {"a": 1}, "not written by zeroseg")
    saved("state_dict_only.pt", world.student_state, "not written by zeroseg")
    saved("a_list.pt", [1, 2, 3], "not written by zeroseg")
    payload = torch.load(world.checkpoint, weights_only=True)
    saved("newer.pt", {**payload, "version": FORMAT_VERSION + 1}, f"v{FORMAT_VERSION + 1}, newer")
    saved("version_text.pt", {**payload, "version": "1"}, "invalid checkpoint format version")
    saved("no_student.pt", {k: v for k, v in payload.items() if k != "student"}, "missing 'student'")
    saved("bad_json.pt", {**payload, "config_json": "{oops"}, "damaged")
    config = json.loads(payload["config_json"])
    config["student"]["from_the_future"] = 1
    saved("future_key.pt", {**payload, "config_json": json.dumps(config)}, "upgrade zeroseg")
    config = json.loads(payload["config_json"])
    saved(
        "future_top_key.pt", {**payload, "config_json": json.dumps({**config, "x": 1})}, "unknown checkpoint"
    )
    config["inference"] = {"bg_thresh": 0.5, "later": True}
    saved("future_inference.pt", {**payload, "config_json": json.dumps(config)}, "unknown inference")
    legacy = tmp_path / "legacy.pt"
    torch.save({"a": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    out["legacy_other.pt"] = (legacy, "not written by zeroseg")
    return out


BAD_NAMES = [
    "truncated_half.pt",
    "truncated_head.pt",
    "empty.pt",
    "notes.pt",
    "image.pt",
    "other_program.pt",
    "state_dict_only.pt",
    "a_list.pt",
    "newer.pt",
    "version_text.pt",
    "no_student.pt",
    "bad_json.pt",
    "future_key.pt",
    "future_top_key.pt",
    "future_inference.pt",
    "legacy_other.pt",
]


@pytest.fixture(scope="module")
def damaged(world, tmp_path_factory):
    files = _damaged(world, tmp_path_factory.mktemp("damaged"))
    assert sorted(files) == sorted(BAD_NAMES)
    return files


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_file_is_one_line_error(damaged, name):
    path, expect = damaged[name]
    with pytest.raises(ZerosegError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert expect.lower() in message.lower(), message


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ZerosegError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(ZerosegError, match="checkpoint not found"):
        load_checkpoint(tmp_path)


def test_weights_that_do_not_fit_are_refused_on_build(world, tmp_path):
    payload = torch.load(world.checkpoint, weights_only=True)
    name = next(k for k in payload["student"] if k.startswith("encoder."))
    del payload["student"][name]
    torch.save(payload, tmp_path / "holes.pt")
    with pytest.raises(ZerosegError, match="damaged|do not fit|missing"):
        Segmenter(tmp_path / "holes.pt")


@pytest.mark.parametrize("name", ["truncated_half.pt", "other_program.pt", "newer.pt", "notes.pt"])
def test_cli_reports_bad_checkpoint_in_one_line(cli, damaged, tmp_path, name):
    path, expect = damaged[name]
    image = tmp_path / "img.png"
    Image.new("RGB", (20, 30), (10, 200, 30)).save(image)
    out = tmp_path / "out"
    result = cli("segment", path, image, "--labels", "cat,dog", "--out", out)
    assert_one_line_error(result, expect)
    assert not out.exists()


def test_full_disk_during_a_save_keeps_the_previous_file(world, tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    target.write_bytes(b"previous")

    def full_disk(obj, path, *a, **k):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(ZerosegError, match="cannot write .*last.pt"):
        save_checkpoint(
            target, config=world.config, student=world.student_state, text=world.teacher.text_state()
        )
    assert target.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


# ---- the tensor checksum -------------------------------------------------------------------------


def _flip_tensor_byte(path: Path) -> None:
    """Flip one byte inside the largest tensor record of a torch zip (its CRC is not checked)."""
    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = (
        int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little"),
        int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little"),
    )
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_flipped_tensor_bytes_fail_the_checksum(cli, world, tmp_path):
    damaged = tmp_path / "flipped.pt"
    damaged.write_bytes(world.checkpoint.read_bytes())
    _flip_tensor_byte(damaged)
    with pytest.raises(ZerosegError, match="checksum"):
        load_checkpoint(damaged)
    image = write_image(tmp_path / "x.png")
    result = cli("segment", damaged, image, "--labels", "red", "--out", tmp_path / "o")
    assert_one_line_error(result, str(damaged), "checksum")
    # the bundled checkpoint carries one and passes it; an old checkpoint without one still loads
    raw = torch.load(bundled_checkpoint(), weights_only=True)
    assert raw["checksum"]["algorithm"] == "sha256" and len(raw["checksum"]["hex"]) == 64
    load_checkpoint(bundled_checkpoint())
    old = {k: v for k, v in torch.load(world.checkpoint, weights_only=True).items() if k != "checksum"}
    torch.save(old, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt").student.keys() == world.student_state.keys()


# ---- the config: validated on every load, covered by the checksum ---------------------------------


def edited_checkpoint(source: Path, dest: Path, change, *, resign: str | None) -> Path:
    """`source` with `change(config_dict)` applied to its config.

    resign: None keeps the stored checksum (an edit after saving); "tensors" re-signs it the way
    checkpoints before the config was covered were signed (tensors only), so that only the value
    checks can refuse it.
    """
    from zeroseg.checkpoint import tensor_checksum

    payload = torch.load(source, weights_only=True)
    config = json.loads(payload["config_json"])
    change(config)
    payload["config_json"] = json.dumps(config)
    if resign == "tensors":
        payload["checksum"] = {"algorithm": "sha256", "hex": tensor_checksum(payload)}
    torch.save(payload, dest)
    return dest


def _set(key: str, value):
    """A config change: dotted `key` (e.g. "inference.bg_thresh") set to `value`."""

    def change(config: dict) -> None:
        *parents, last = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    return change


BAD_VALUES = [
    ("logit_scale", float("nan"), "logit_scale"),
    ("logit_scale", float("inf"), "logit_scale"),
    ("logit_scale", -14.2, "logit_scale"),
    ("logit_scale", 0.0, "logit_scale"),
    ("inference.bg_thresh", float("nan"), "background threshold"),
    ("inference.bg_thresh", 1.5, "background threshold"),
    ("preprocess.std", [0.26, 0.0, 0.27], "std"),
    ("preprocess.mean", [0.5, float("nan"), 0.4], "mean"),
    ("templates", ["a photo"], "template"),
    ("inference.head", "sparse", "head must be paper or dense"),
]


@pytest.mark.parametrize(("key", "value", "expect"), BAD_VALUES, ids=[f"{k}={v}" for k, v, _ in BAD_VALUES])
def test_a_config_value_no_model_can_use_is_refused(world, tmp_path, key, value, expect):
    """A NaN logit scale passed the exporters' gates at 100 % (every pixel background) while
    `zeroseg segment` refused it at run time: `check_config` now refuses it in load_checkpoint, which
    every loader uses, even where the checksum cannot (a checkpoint signed before it covered the config)."""
    path = edited_checkpoint(world.checkpoint, tmp_path / "bad.pt", _set(key, value), resign="tensors")
    with pytest.raises(ZerosegError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and expect in message, message


def test_an_edited_config_fails_the_checksum(world, tmp_path):
    """The checksum of a new checkpoint covers its config: a plausible edit (logit scale 14 -> 50) is
    refused like a flipped weight."""
    raw = torch.load(world.checkpoint, weights_only=True)
    assert raw["checksum"]["covers"] == ["tensors", "config_json"]
    path = edited_checkpoint(world.checkpoint, tmp_path / "edited.pt", _set("logit_scale", 50.0), resign=None)
    with pytest.raises(ZerosegError, match="checksum"):
        load_checkpoint(path)
    path = edited_checkpoint(
        world.checkpoint, tmp_path / "nan.pt", _set("logit_scale", float("nan")), resign=None
    )
    with pytest.raises(ZerosegError, match="checksum"):
        load_checkpoint(path)


def test_checkpoints_signed_over_their_tensors_only_still_load(world, tmp_path):
    """Backward compatibility: a checksum without "covers" (every checkpoint before it) is checked
    over the tensors and loads."""
    path = edited_checkpoint(world.checkpoint, tmp_path / "old_style.pt", lambda c: None, resign="tensors")
    assert "covers" not in torch.load(path, weights_only=True)["checksum"]
    assert load_checkpoint(path).config == world.config
    old_bundle = edited_checkpoint(bundled_checkpoint(), tmp_path / "old_bundle.pt", lambda c: None,
                                   resign="tensors")  # fmt: skip
    assert load_checkpoint(old_bundle).logit_scale > 0


# ---- the recorded head: the default of every segmenter and exporter built from the checkpoint ------


def test_a_recorded_head_round_trips_and_is_the_segmenters_default(world, tmp_path):
    """The frontier records the head it picked (`CheckpointConfig.head`): it is saved under
    "inference", loaded back, and `Segmenter`'s default; an explicit head still wins. A checkpoint
    that records none keeps no "head" key (older zeroseg reads it) and defaults to the paper's."""
    from zeroseg.checkpoint import save_checkpoint

    plain = load_checkpoint(world.checkpoint, with_train_state=False)
    assert plain.config.head is None and "head" not in plain.config.to_dict()["inference"]
    assert plain.config.default_head == "paper" and Segmenter(plain).head_mode == "paper"
    path = tmp_path / "dense.pt"
    save_checkpoint(path, config=plain.config.replace(head="dense"), student=plain.student, text=plain.text)
    dense = load_checkpoint(path, with_train_state=False)
    assert dense.config.head == "dense" and dense.config.to_dict()["inference"]["head"] == "dense"
    assert Segmenter(dense).head_mode == "dense"
    assert Segmenter(dense, head="paper").head_mode == "paper"
    assert Segmenter.from_checkpoint(path, head="segments").head_mode == "paper"


def test_the_bundled_checkpoint_records_the_frontiers_choice():
    """`zeroseg.shapeworld.bundle` wrote the frontier's setting into the bundled checkpoint, so
    `bundled` runs as the frontier scored it: the head, short side and background settings in
    shapeworld.json's choice, and the windowed design."""
    from zeroseg.bundled import ASSETS, PROOF_NAME

    choice = json.loads((ASSETS / PROOF_NAME).read_text())["choice"]
    config = load_checkpoint(bundled_checkpoint(), with_train_state=False).config
    assert config.head == choice["head"] and config.preprocess.test_short_side == choice["short_side"]
    assert (config.bg_thresh, config.bg_prompt) == (choice["bg_thresh"], choice["bg_prompt"])
    window = None if choice["design"] == "trained" else int(choice["design"].removeprefix("win"))
    assert config.student.attn_window == window
