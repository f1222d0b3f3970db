"""The ShapeWorld proof over seeds (issue 14): the weight average, the tuning grid, the summary.

- `--ema`: model.pt holds the average, model-raw.pt the live weights (= last.pt's), the average
  survives a resume bit for bit, and a bad decay is a one-line error.
- `cached_network` returns exactly what the network computes (it only skips recomputation), and
  `tune_and_score` picks on tune and scores val once with the picked setting.
- The summary's statistics, the targets, the median seed, the Markdown and the picture.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from zeroseg.bundled import bundled_checkpoint, bundled_teacher
from zeroseg.checkpoint import load_checkpoint
from zeroseg.data.voc import VOCDataset
from zeroseg.errors import ZerosegError
from zeroseg.evaluation.evaluate import evaluate
from zeroseg.infer.segmenter import Segmenter
from zeroseg.shapeworld.proof_report import markdown, plot
from zeroseg.shapeworld.proof_score import median_seed, summarize, thread_check
from zeroseg.shapeworld.tuning import cached_network, tune_and_score
from zeroseg.shapeworld.write import write_scenes
from zeroseg.train.ema import WeightEMA

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- the weight average ---------------------------------------------------------------------------


def test_ema_moves_towards_the_weights_with_a_warm_up() -> None:
    model = torch.nn.BatchNorm1d(2)
    ema = WeightEMA(model, 0.9)
    with torch.no_grad():
        model.weight.fill_(3.0)  # from 1.0
    model.num_batches_tracked.fill_(7)
    ema.update(model)  # decay min(0.9, 1/10) = 0.1: 1 + 0.9 * (3 - 1)
    assert torch.allclose(ema.shadow["weight"], torch.full((2,), 2.8))
    assert int(ema.shadow["num_batches_tracked"]) == 7  # integer buffers are copied
    for _ in range(100):
        ema.update(model)
    assert ema.current_decay() == 0.9 and torch.allclose(ema.shadow["weight"], torch.full((2,), 3.0))
    with pytest.raises(ValueError, match="decay"):
        WeightEMA(model, 1.0)


@pytest.fixture(scope="module")
def cached_scenes(tmp_path_factory):
    """Twelve 64-px scenes and their teacher cache (the reproducibility test's sizes)."""
    from zeroseg.data.sources import ImageSource
    from zeroseg.teacher.cache import build_cache
    from zeroseg.teacher.load import load_teacher

    root = tmp_path_factory.mktemp("ema")
    write_scenes(root / "scenes", n=12, seed=5, size=64, val_fraction=0.0)
    images = root / "scenes" / "JPEGImages"
    build_cache(ImageSource.open(str(images)), load_teacher(str(bundled_teacher())), root / "cache",
                image_size=64, grids=(1, 2), batch_size=4, progress=False)  # fmt: skip
    return images, root / "cache"


def _train(cli, data, out, *extra):
    images, cache = data
    return cli("train", "--data", images, "--teacher-cache", cache, "--out", out, "--preset", "shapeworld",
               "--steps", "4", "--batch-size", "4", "--grids", "1,2", "--region-weight", "1",
               "--log-every", "1", "-q", *extra)  # fmt: skip


def test_ema_run_saves_the_average_and_the_live_weights_and_resumes_exactly(
    cli, cached_scenes, tmp_path
) -> None:
    assert _train(cli, cached_scenes, tmp_path / "full", "--ema", "0.5").code == 0
    average = load_checkpoint(tmp_path / "full" / "model.pt").student
    raw = load_checkpoint(tmp_path / "full" / "model-raw.pt").student
    live = load_checkpoint(tmp_path / "full" / "last.pt").student
    assert all(torch.equal(raw[k], live[k]) for k in raw)
    assert any(not torch.equal(raw[k], average[k]) for k in raw if raw[k].is_floating_point())
    assert _train(cli, cached_scenes, tmp_path / "cut", "--ema", "0.5", "--stop-after-steps", "2").code == 0
    assert not (tmp_path / "cut" / "model.pt").exists()
    assert _train(cli, cached_scenes, tmp_path / "cut", "--ema", "0.5", "--resume").code == 0
    resumed = load_checkpoint(tmp_path / "cut" / "model.pt").student
    assert all(torch.equal(resumed[k], average[k]) for k in average)
    plain = tmp_path / "plain"
    assert _train(cli, cached_scenes, plain).code == 0 and not (plain / "model-raw.pt").exists()


@pytest.mark.parametrize("decay", ["1.0", "0", "-0.5", "nan"])
def test_bad_ema_decay_is_a_one_line_error(cli, cached_scenes, tmp_path, decay) -> None:
    run = _train(cli, cached_scenes, tmp_path / "bad", "--ema", decay)
    assert run.code != 0 and "--ema" in run.err and "Traceback" not in run.err
    assert len(run.err.strip().splitlines()) == 1
    assert not (tmp_path / "bad" / "model.pt").exists()


# ---- the tuning grid ------------------------------------------------------------------------------


class CountingSegmenter(Segmenter):
    """The bundled student, counting its network calls."""

    calls = 0

    def forward(self, pixels):
        CountingSegmenter.calls += 1
        return super().forward(pixels)


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    write_scenes(root / "tune", n=6, seed=31, size=128, val_fraction=1.0)
    write_scenes(root / "val", n=6, seed=32, size=128, val_fraction=1.0)
    return VOCDataset(root / "tune", "val"), VOCDataset(root / "val", "val")


def test_cached_network_returns_what_the_network_computes(splits) -> None:
    tune, _ = splits
    seg = CountingSegmenter(bundled_checkpoint())
    start = CountingSegmenter.calls
    plain = [evaluate(seg, tune, bg_thresh=t, progress=False).to_dict() for t in (0.5, 0.9)]
    before = CountingSegmenter.calls
    plain_calls = before - start
    with cached_network(seg):
        cached = [evaluate(seg, tune, bg_thresh=t, progress=False).to_dict() for t in (0.5, 0.9)]
    first_pass = CountingSegmenter.calls - before
    for a, b in zip(plain, cached, strict=True):
        assert a["mIoU"] == b["mIoU"] and a["per_class_IoU"] == b["per_class_IoU"]
    assert (
        plain_calls > 0 and first_pass == plain_calls // 2
    )  # the second threshold reused every forward pass
    assert "forward" not in vars(seg) and "preprocess" not in vars(seg)  # the instance is restored


def test_tune_and_score_picks_on_tune_and_scores_val_once(splits) -> None:
    tune, val = splits
    ckpt = load_checkpoint(bundled_checkpoint(), with_train_state=False)
    sides, thresholds = (128, 256), (0.0, 0.9)
    result = tune_and_score(
        lambda side: Segmenter(ckpt, short_side=side),
        tune,
        {"val": val},
        short_sides=sides,
        thresholds=thresholds,
    )
    grid = {
        (side, t, p): evaluate(
            Segmenter(ckpt, short_side=side), tune, bg_thresh=t, bg_prompt=p, progress=False
        ).miou
        for side in sides
        for p in (True, False)
        for t in thresholds
    }
    picked = (result["short_side"], result["bg_thresh"], result["bg_prompt"])
    assert result["tune_mIoU"] == max(grid.values()) == grid[picked]
    again = evaluate(
        Segmenter(ckpt, short_side=picked[0]), val, bg_thresh=picked[1], bg_prompt=picked[2], progress=False
    )
    assert result["val"]["val"]["mIoU"] == again.miou


# ---- the summary over seeds -----------------------------------------------------------------------


def _row(val: float, val2: float) -> dict:
    return {"tune_mIoU": val, "short_side": 256, "bg_thresh": 0.9, "bg_prompt": True,
            "val": {"val": {"mIoU": val}, "val2": {"mIoU": val2}}}  # fmt: skip


def test_summary_targets_and_median_seed(tmp_path) -> None:
    seeds = {0: _row(0.74, 0.73), 1: _row(0.70, 0.69), 2: _row(0.72, 0.75)}
    baseline = _row(0.66, 0.70)
    summary = summarize(seeds, baseline)
    val, val2 = summary["val"], summary["val2"]
    assert val["mean"] == pytest.approx(0.72) and val["sd"] == pytest.approx(
        statistics.stdev([0.74, 0.70, 0.72])
    )
    assert val["min"] == 0.70 and val["every_seed_above"] and val["mean_target_met"]  # +6 pt
    assert val2["min_margin"] == pytest.approx(-0.01) and not val2["every_seed_above"]
    assert not val2["mean_target_met"]  # 0.7233 - 0.70 = +2.3 pt
    assert median_seed(seeds) == 2  # val 0.70 < 0.72 < 0.74
    assert median_seed({"0": _row(0.7, 0), "1": _row(0.6, 0)}) == 1  # even count: the lower middle
    by_seed = {str(k): v for k, v in seeds.items()}
    result = {"summary": {"segments": summary, "dense": summary}, "bundled_seed": 2,
              "students": {"segments": by_seed, "dense": by_seed},
              "untrained": _row(0.12, 0.12), "maskclip": baseline, "oracle": {"val": 0.98, "val2": 0.97},
              "all_background": {"val": 0.12, "val2": 0.12},
              "val_images": {"val": 200, "val2": 200}}  # fmt: skip
    text = markdown(result)
    assert "seed 2, paper's head (the median: what --bundle writes)" in text
    assert "seed 2, dense head (ours) |" in text
    assert "| paper's head | val (3 seeds) | 0.720 ± 0.020 |" in text
    assert "+6.0 pt" in text and "| no | no |" in text  # val2: neither target
    plot(result, tmp_path / "proof.png")
    assert (tmp_path / "proof.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_thread_check_reports_each_seeds_change_beside_the_seed_spread() -> None:
    proof = {"segments": {"0": _row(0.74, 0.73), "1": _row(0.70, 0.69), "2": _row(0.72, 0.75)}}
    other = {"segments": {"0": _row(0.75, 0.73), "1": _row(0.67, 0.70), "2": _row(0.72, 0.74)}}
    check = thread_check(proof, other, 1)
    check["proof_threads"] = 2
    seeds = check["heads"]["segments"]["seeds"]
    assert seeds["1"]["val"] == pytest.approx({"proof": 0.70, "other": 0.67, "change": -0.03})
    summary = check["heads"]["segments"]["summary"]
    assert summary["val"]["largest_change"] == pytest.approx(0.03)  # seed 1, not seed 0's +0.01
    assert summary["val2"]["largest_change"] == pytest.approx(0.01)
    assert summary["val"]["seed_sd"] == pytest.approx(statistics.stdev([0.74, 0.70, 0.72]))
    by_seed = proof["segments"]
    result = {"summary": {"segments": summarize(by_seed, _row(0.66, 0.70))}, "bundled_seed": 2,
              "students": proof, "untrained": _row(0.12, 0.12), "maskclip": _row(0.66, 0.70),
              "oracle": {"val": 0.98, "val2": 0.97}, "all_background": {"val": 0.12, "val2": 0.12},
              "val_images": {"val": 200, "val2": 200}, "threads": check}  # fmt: skip
    text = markdown(result)
    assert "| trained at 2 → 1 threads | seed | val | val2 |" in text
    assert "| paper's head | 1 | 0.700 → 0.670 (-3.0 pt) | 0.690 → 0.700 (+1.0 pt) |" in text
    assert "| paper's head | largest change / seed sd | 3.0 pt / 2.0 pt | 1.0 pt / 3.1 pt |" in text


def test_recipe_folders_and_flags() -> None:
    from zeroseg.shapeworld.proof import Recipe

    assert Recipe().tag() == "steps400-region1-ema0.99"  # the proof's runs keep their folder
    soft = Recipe(soft_assign=0.5, threads=1)
    assert soft.tag() == "steps400-region1-ema0.99-soft0.5-threads1"
    assert soft.train_args(3)[-4:] == ["--ema", "0.99", "--soft-assign", "0.5"]
    assert "--soft-assign" not in Recipe().train_args(3)


def test_a_runs_thread_count_is_read_from_its_metrics(tmp_path) -> None:
    from zeroseg.shapeworld.proof import _run_threads

    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 50, "torch_threads": 3}\n{"step": 100, "torch_threads": 3}\n'
    )
    assert _run_threads(tmp_path) == 3
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metrics.jsonl").write_text('{"step": 50}\n')  # logged before torch_threads
    assert _run_threads(tmp_path / "old") is None and _run_threads(tmp_path / "missing") is None


@pytest.mark.parametrize(
    "args",
    [["--seeds", "0"], ["--ema", "1.5"], ["--steps", "-1"], ["--threads", "0"], ["--compare-threads", "0"],
     ["--soft-assign", "1"], ["--restarts", "0"], ["--bundle", "--compare-threads", "1"],
     ["--bundle"],  # no frontier.json of this recipe in --work
     ["--compare-threads", "1", "--bundle", "--seeds", "2"]],
)  # fmt: skip
def test_proof_refuses_bad_options_in_one_line(args, tmp_path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "zeroseg.shapeworld.proof", "--work", str(tmp_path / "w"), *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert not (tmp_path / "w").exists()


# ---- the dense head -------------------------------------------------------------------------------


def test_dense_head_paints_the_interpolated_class_probabilities_of_each_patchs_segment() -> None:
    import torch.nn.functional as F

    seg = Segmenter(bundled_checkpoint(), short_side=256, head="dense")
    root = Path(tempfile.mkdtemp())
    write_scenes(root / "s", n=2, seed=41, size=128, val_fraction=1.0)
    images = [Image.open(p).convert("RGB") for p in sorted((root / "s" / "JPEGImages").glob("*.jpg"))]
    classes = ["red", "green", "blue", "yellow", "magenta", "cyan"]
    got = seg(images, classes, bg_thresh=0.8, bg_prompt=True)
    space, text = seg.encode_classes(classes, bg_prompt=True)
    pixels = seg.preprocess(images, seg.input_size(128, 128))
    out = seg.forward(pixels)
    for j, result in enumerate(got):
        # by hand: each patch gets its owning segment's softmax; bilinear in probability space
        seg_probs = torch.softmax(seg.logit_scale * F.normalize(out.segments[j], dim=-1) @ text.T, dim=-1)
        owner = out.maps[j].argmax(dim=0)  # (h, w): the maps are one-hot
        patch_probs = seg_probs[owner].permute(2, 0, 1)[None]  # (1, C, h, w)
        up = F.interpolate(patch_probs, size=(128, 128), mode="bilinear", align_corners=False)[0]
        best, index = up.max(dim=0)
        expect = torch.where(best < 0.8, 0, index + space.label_offset).numpy()
        assert (result.labels == expect).mean() > 0.999  # fp summation order may flip a tie pixel
        assert result.segment_labels.shape == (owner.numel(),)  # per patch, as MaskCLIP's


def test_head_option_is_checked_and_not_combined_with_engines_or_maskclip(cli, tmp_path) -> None:
    with pytest.raises(ZerosegError, match="--head must be paper or dense, got 'soft'"):
        Segmenter(bundled_checkpoint(), head="soft")
    assert Segmenter(bundled_checkpoint(), head="segments").head_mode == "paper"  # the older name
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)
    for args, expect in (
        (("segment", "bundled", str(image), "--labels", "red", "--head", "soft",
          "--out", str(tmp_path / "o")), "--head must be paper or dense"),
        (("segment", str(image), "--engine", str(tmp_path), "--labels", "red", "--head", "foo",
          "--out", str(tmp_path / "o")), "--head must be paper or dense, got 'foo'"),
        (("eval", "--method", "maskclip", "--teacher", "bundled", "--dataset", str(tmp_path),
          "--head", "dense"), None),
    ):  # fmt: skip
        run = cli(*args)
        assert run.code != 0 and "Traceback" not in run.err and len(run.err.strip().splitlines()) == 1, (
            run.err
        )
        if expect:
            assert expect in run.err, run.err
    assert not (tmp_path / "o").exists()


def test_cli_maskclip_with_the_bundled_teacher_uses_the_proofs_templates(cli, splits, tmp_path) -> None:
    """`--method maskclip --teacher bundled` defaults to the bundled checkpoint's six ShapeWorld
    templates (what the proof and the bench give MaskCLIP); `--templates` overrides; ZeroSeg and
    engines refuse the option."""
    from zeroseg.bundled import maskclip_teacher_and_templates
    from zeroseg.classes import resolve_templates
    from zeroseg.infer.maskclip import MaskCLIPSegmenter

    teacher, templates = maskclip_teacher_and_templates("bundled", None)
    assert teacher == str(bundled_teacher())
    assert (
        templates == list(load_checkpoint(bundled_checkpoint()).templates) == resolve_templates("shapeworld")
    )
    assert maskclip_teacher_and_templates(str(tmp_path / "other.pt"), None) == (
        str(tmp_path / "other.pt"),
        None,
    )
    assert maskclip_teacher_and_templates("bundled", "single")[1] == resolve_templates("single")
    _, val = splits
    run = cli("eval", "--method", "maskclip", "--teacher", "bundled", "--dataset", str(val.root),
              "-q", "--json", str(tmp_path / "m.json"))  # fmt: skip
    assert run.code == 0, run.err
    seg = MaskCLIPSegmenter.from_spec(str(bundled_teacher()), templates=resolve_templates("shapeworld"))
    want = evaluate(seg, val, progress=False).miou
    assert __import__("json").loads((tmp_path / "m.json").read_text())["mIoU"] == pytest.approx(
        want, abs=1e-9
    )
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)
    for args in (
        ("eval", "bundled", "--dataset", str(val.root), "--templates", "imagenet"),
        ("segment", str(image), "--engine", str(tmp_path), "--labels", "red", "--templates", "imagenet",
         "--out", str(tmp_path / "o")),
        ("eval", "--method", "maskclip", "--teacher", "bundled", "--dataset", str(val.root),
         "--templates", "nope"),
    ):  # fmt: skip
        run = cli(*args)
        assert run.code != 0 and "Traceback" not in run.err and len(run.err.strip().splitlines()) == 1, (
            run.err
        )
        assert "--templates" in run.err, run.err
    assert not (tmp_path / "o").exists()


def test_restarts_train_offset_seeds_and_keep_the_lowest_heldout_loss(tmp_path, monkeypatch) -> None:
    """`--restarts K`: restart r of seed s trains in seed<s>-restart<r> with seed s + 1000 r, and the
    seed's student is the restart with the lowest held-out region loss (ties: the first)."""
    from zeroseg.shapeworld import proof

    trained: list[tuple[str, str]] = []

    def fake_train(*args, threads=None):
        out = Path(args[args.index("--out") + 1])
        trained.append((out.name, args[args.index("--seed") + 1]))
        out.mkdir(parents=True)
        (out / "model.pt").write_bytes(b"")

    losses = {
        "seed0": 0.30,
        "seed0-restart1": 0.25,
        "seed0-restart2": 0.25,
        "seed1": 0.20,
        "seed1-restart1": 0.4,
    }
    monkeypatch.setattr(proof, "_zeroseg", fake_train)
    monkeypatch.setattr(proof, "heldout", lambda work, run: losses[run.name])
    runs, selection = proof.selected_runs(tmp_path, proof.Recipe(restarts=3), 1)
    assert trained == [("seed0", "0"), ("seed0-restart1", "1000"), ("seed0-restart2", "2000")]
    assert runs[0].name == "seed0-restart1" and selection["0"]["chosen"] == 1
    assert selection["0"]["restarts"]["2"]["heldout_region_loss"] == 0.25
    runs, selection = proof.selected_runs(tmp_path, proof.Recipe(restarts=2), 2)
    assert runs[1].name == "seed1" and selection["1"]["chosen"] == 0
    monkeypatch.setattr(proof, "heldout", lambda work, run: pytest.fail("one run needs no selection"))
    runs, selection = proof.selected_runs(tmp_path, proof.Recipe(), 2)
    assert [r.name for r in runs.values()] == ["seed0", "seed1"] and selection["0"] == {
        "chosen": 0,
        "restarts": {},
    }
