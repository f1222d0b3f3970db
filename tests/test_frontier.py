"""The ShapeWorld frontier: its arithmetic on made-up numbers, its tables and figure, the interleaved
timing, and `zeroseg-bench frontier` end to end on a tiny student and the bundled teacher."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from zeroseg.bench import frontier as bench_frontier
from zeroseg.bundled import bundled_teacher
from zeroseg.shapeworld.frontier_math import (
    baseline_best,
    best_within,
    budget_table,
    budgets,
    bundle_choice,
    seeds_of,
    student_best,
    targets,
)
from zeroseg.shapeworld.frontier_report import markdown, plot

pytestmark = pytest.mark.usefixtures("one_thread")


def _row(val: float, val2: float | None = None) -> dict:
    return {"tune_mIoU": val, "short_side": 0, "bg_thresh": 0.5, "bg_prompt": True,
            "val": {"val": {"mIoU": val}, "val2": {"mIoU": val if val2 is None else val2}}}  # fmt: skip


def _method(kind: str, ms: dict[str, float], seeds: dict[str, dict[str, float]]) -> dict:
    return {"kind": kind, "ms": ms, "engine": {s: "torch" for s in ms},
            "seeds": {k: {s: _row(v) for s, v in row.items()} for k, row in seeds.items()}}  # fmt: skip


def _result(student_128: tuple[float, float] = (0.70, 0.72)) -> dict:
    """Students at 10 / 40 ms, MaskCLIP at 5 / 20 / 80 ms, ClearCLIP worse everywhere."""
    result = {
        "splits": ["val", "val2"],
        "timed_seed": "0",
        "env": {"cpu": {"model": "test CPU", "flags": ["avx2"], "load_average_1_5_15": [0.5, 0.5, 0.5],
                        "load_average_end": [0.6, 0.5, 0.5]}, "threads": 2, "omp_wait_policy": "PASSIVE"},
        "methods": {
            "student-paper": _method("student", {"128": 10.0, "256": 40.0},
                                     {"0": {"128": student_128[0], "256": 0.80},
                                      "1": {"128": student_128[1], "256": 0.84}}),
            "student-dense": _method("student", {"128": 12.0, "256": 45.0},
                                     {"0": {"128": 0.71, "256": 0.86}, "1": {"128": 0.69, "256": 0.88}}),
            "maskclip": _method("baseline", {"128": 5.0, "256": 20.0, "512": 80.0},
                                {"all": {"128": 0.50, "256": 0.66, "512": 0.83}}),
            "clearclip": _method("baseline", {"128": 6.0, "256": 22.0, "512": 90.0},
                                 {"all": {"128": 0.40, "256": 0.55, "512": 0.62}}),
        },
    }  # fmt: skip
    for head in ("paper", "dense"):
        result["methods"][f"student-{head}"].update(head=head, design="trained")
    result["budget_table"] = {s: budget_table(result, s) for s in result["splits"]}
    result["targets"] = {s: targets(result, s) for s in result["splits"]}
    return result


def test_best_within_a_budget():
    r = _result()
    paper = r["methods"]["student-paper"]
    assert best_within(paper, "0", "val", 9.9) is None
    assert best_within(paper, "0", "val", 10.0) == (0.70, "128")
    assert best_within(paper, "1", "val", 1e9) == (0.84, "256")
    assert seeds_of(r) == ["0", "1"]
    assert student_best(r, "1", "val", 44.0) == (0.84, "student-paper", "256")
    assert student_best(r, "1", "val", 45.0) == (0.88, "student-dense", "256")
    assert baseline_best(r, "val", 21.0) == (0.66, "maskclip", "256")
    assert baseline_best(r, "val", 4.0) is None
    assert budgets(r) == [5.0, 6.0, 10.0, 12.0, 20.0, 22.0, 40.0, 45.0, 80.0, 90.0]


def test_budget_table_rows():
    rows = {row["budget_ms"]: row for row in _result()["budget_table"]["val"]}
    assert rows[5.0]["student_worst_seed"] is None and rows[5.0]["margin"] is None
    assert rows[5.0]["baseline"] == {"mIoU": 0.50, "method": "maskclip", "short_side": "128"}
    assert rows[12.0]["methods"]["student-dense"] == pytest.approx(0.70)  # mean of 0.71 and 0.69
    assert rows[12.0]["student_worst_seed"] == pytest.approx(0.71)  # seed 0: dense 0.71; seed 1: paper 0.72
    assert rows[20.0]["margin"] == pytest.approx(0.71 - 0.66)
    assert rows[45.0]["student_worst_seed"] == pytest.approx(0.86)
    assert rows[80.0]["margin"] == pytest.approx(0.86 - 0.83)
    assert rows[90.0]["methods"]["clearclip"] == pytest.approx(0.62)


def test_targets_met_and_missed_with_amounts():
    t = _result()["targets"]["val"]
    assert t["baseline_best"] == {"mIoU": 0.83, "method": "maskclip", "short_side": "512", "ms": 80.0}
    every = t["every_budget"]
    assert every["budgets_without_student"] == [5.0, 6.0] and not every["met"]
    assert every["worst_margin"] == pytest.approx(0.86 - 0.83) and every["worst_budget_ms"] == 80.0
    assert t["best"]["seed_mean"] == pytest.approx(0.87) and t["best"]["min_seed"] == pytest.approx(0.86)
    assert t["best"]["mean_margin"] == pytest.approx(0.04) and t["best"]["met"]
    # the first student setting whose seed mean reaches 0.83: paper at 256 (0.82) no, dense at 256 (0.87)
    assert t["reach"] == {"ms": 45.0, "method": "student-dense", "short_side": "256", "ratio": 45.0 / 80.0,
                          "met": False}  # fmt: skip
    assert t["seed_sd"]["seeds"] == 2 and not t["seed_sd"]["met"]  # fewer than 5 seeds never counts


def test_a_student_below_the_baseline_misses_the_best_target():
    r = _result()
    r["methods"]["maskclip"]["seeds"]["all"]["512"] = _row(0.875)
    t = targets(r, "val")
    assert not t["best"]["met"] and t["best"]["min_margin"] == pytest.approx(-0.015)
    assert t["reach"]["ms"] is None and not t["reach"]["met"]


def test_the_bundle_is_the_cheapest_setting_that_reaches_the_best_baseline():
    """Issue 24's rule for the bundled model: the cheapest student setting whose seed mean reaches
    the best baseline's best (dense at 256, 45 ms), and its median seed (the lower of two)."""
    choice = bundle_choice(_result())
    assert (choice["rule"], choice["method"], choice["head"], choice["short_side"]) == (
        "reach", "student-dense", "dense", 256,
    )  # fmt: skip
    assert choice["seed"] == "0" and choice["ms"] == 45.0 and choice["mIoU"] == {"val": 0.86, "val2": 0.86}
    assert (choice["bg_thresh"], choice["bg_prompt"]) == (0.5, True)


def test_with_no_setting_reaching_the_baseline_the_bundle_has_the_largest_margin():
    """No student setting reaches MaskCLIP 512's 0.875: the setting with the largest margin of its
    seed mean over the best baseline within its own latency (dense 256: 0.87 - 0.66), not the
    cheapest (paper 128: 0.61 - 0.50)."""
    r = _result(student_128=(0.60, 0.62))
    r["methods"]["maskclip"]["seeds"]["all"]["512"] = _row(0.875)
    choice = bundle_choice(r)
    assert (choice["rule"], choice["method"], choice["short_side"], choice["seed"]) == (
        "margin", "student-dense", 256, "0",
    )  # fmt: skip


def test_markdown_and_plot(tmp_path):
    r = _result()
    text = markdown(r)
    assert "| student, dense head (ours) | 256 | torch | 45.0 | 0.870 ± 0.014 | 0.870 ± 0.014 |" in text
    assert "## Best mIoU within budget: val2" in text
    assert "no student setting within 5.0, 6.0 ms" in text
    assert "**missed** (sd 1.4 pt over 2 seeds)" in text
    assert "reached by student, dense head (ours) at 256 in 45.0 ms = 0.56× its 80.0 ms" in text
    path = tmp_path / "f.png"
    plot(r, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png"]


def test_time_settings_interleaves_and_takes_medians(monkeypatch):
    clock = [0.0]
    order: list[str] = []

    def setting(name: str, cost: list[float]):
        calls = iter(cost)

        def call(image):
            order.append(name)
            clock[0] += next(calls)

        return call

    monkeypatch.setattr(bench_frontier.time, "perf_counter", lambda: clock[0])
    settings = {"a": setting("a", [9, 9] + [0.001, 0.003, 0.002]), "b": setting("b", [9, 9] + [0.01] * 3),
                "c": setting("c", [9, 9] + [0.1, 0.1, 0.5])}  # fmt: skip
    medians = bench_frontier.time_settings(
        settings, [Image.new("RGB", (4, 4))], rounds=3, warmup=2, log=lambda _: None
    )
    assert medians == pytest.approx({"a": 2.0, "b": 10.0, "c": 100.0})
    assert order[6:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # rotated by one per round


def test_agreement():
    a = [np.zeros((2, 2), int), np.ones((1, 2), int)]
    b = [np.array([[0, 1], [0, 0]]), np.ones((1, 2), int)]
    assert bench_frontier.pixel_agreement(a, b) == pytest.approx(5 / 6)  # the gate's measure


@pytest.mark.slow
def test_bench_frontier_times_every_setting(bench_cli, world, tmp_path, monkeypatch):
    """`zeroseg-bench frontier SPEC`: the student on PyTorch, ONNX Runtime and OpenVINO (gated), a
    baseline on PyTorch, every setting timed; the fastest gated engine is each setting's."""
    monkeypatch.setattr(bench_frontier, "ROUNDS", 2)
    images = []
    for i in range(2):
        path = tmp_path / f"scene{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(path)
        images.append(str(path))
    row = {"bg_thresh": 0.3, "bg_prompt": True}
    spec = {
        "threads": 1, "images": images, "classes": [["background"], ["red"], ["green"]],
        "export_dir": str(tmp_path / "exports"),
        "student": {"seed": "0", "methods": {
            f"student-{head}": {"checkpoint": str(world.checkpoint), "head": head, "export": f"onnx-{head}",
                                "settings": {"64": row}}
            for head in ("paper", "dense")}},
        "baselines": {"teacher": str(bundled_teacher()), "templates": ["a photo of a {}."],
                      "settings": {"maskclip": {"128": row}, "naclip": {"128": row}}},
    }  # fmt: skip
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = tmp_path / "times.json"
    run = bench_cli("frontier", str(tmp_path / "spec.json"), "--json", str(out))
    assert run.code == 0, run.err
    result = json.loads(out.read_text())
    assert set(result["methods"]) == {"student-paper", "student-dense", "maskclip", "naclip"}
    for head in ("paper", "dense"):
        method = result["methods"][f"student-{head}"]
        engines = method["engines"]["64"]
        assert {"torch", "onnxruntime"} <= set(engines)
        assert method["engine"]["64"] == min(engines, key=engines.get)
        assert method["ms"]["64"] == min(engines.values()) > 0
        assert result["agreement"][f"student-{head}|64|torch"] == 1.0
        assert result["agreement"][f"student-{head}|64|onnxruntime"] >= bench_frontier.GATE
    assert result["methods"]["naclip"]["engine"] == {"128": "torch"}
    assert result["env"]["threads"] == 1 and result["env"]["cpu"]["flags"] is not None


def test_bench_frontier_refuses_a_missing_spec(bench_cli, tmp_path):
    run = bench_cli("frontier", str(tmp_path / "nope.json"))
    assert run.code != 0 and "Traceback" not in run.err and len(run.err.strip().splitlines()) == 1, run.err
    assert "python -m zeroseg.shapeworld.proof --frontier" in run.err


def test_readme_table_marks_the_cheapest_student_and_the_best_baselines_settings():
    from zeroseg.shapeworld.frontier_report import readme_lines

    lines = readme_lines(_result())  # the paper head's 10 ms and MaskCLIP's 5, 20, 80 ms
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| 5", "| 10", "| 20", "| 80"]
    assert lines[2] == "| 5 | - | 0.500 MaskCLIP 128 | - | 0.500 MaskCLIP 128 |"
    assert lines[3] == "| 10 | 0.710 (0.700) | 0.500 MaskCLIP 128 | 0.710 (0.700) | 0.500 MaskCLIP 128 |"
    assert lines[-1].startswith("| 80 | 0.870 (0.860) | 0.830 MaskCLIP 512 |")


def test_stored_scores_are_reused_only_for_the_same_grid(tmp_path):
    from zeroseg.shapeworld.proof_score import stored

    calls = []
    assert stored(tmp_path, "m", lambda: calls.append(1) or {"a": 1}, (128, 768)) == {"a": 1}
    assert stored(tmp_path, "m", lambda: calls.append(2) or {"a": 2}, (128, 768)) == {"a": 1}
    assert stored(tmp_path, "m", lambda: calls.append(3) or {"a": 3}, (128,)) == {"a": 3}
    assert calls == [1, 3]


def test_proof_writes_the_frontier_from_scores_and_times(tmp_path, monkeypatch):
    """`proof --frontier`'s glue: stored per-side scores of every seed and baseline, the timing spec
    (the median seed's settings, five val scenes), and frontier.json / .md / .png."""
    import shutil

    from zeroseg.bundled import bundled_checkpoint
    from zeroseg.checkpoint import load_checkpoint
    from zeroseg.shapeworld import frontier as fr
    from zeroseg.shapeworld.proof import Recipe, write_frontier
    from zeroseg.shapeworld.write import write_scenes

    for split, seed in (("tune", 1), ("val", 2), ("val2", 3)):
        write_scenes(tmp_path / split, n=6, seed=seed, size=32, val_fraction=1.0)
    shutil.copyfile(bundled_teacher(), tmp_path / "teacher.pt")
    runs = {}
    for seed in range(3):
        runs[seed] = tmp_path / "students" / "r" / f"seed{seed}"
        runs[seed].mkdir(parents=True)
        shutil.copyfile(bundled_checkpoint(), runs[seed] / "model.pt")
    quality = {"seed0": 0.80, "seed1": 0.70, "seed2": 0.75}

    def student(checkpoint, tune, vals, sides=fr.STUDENT_SIDES):
        q = quality[
            checkpoint.parent.name if checkpoint.name == "model.pt" else checkpoint.stem.split("-")[-1]
        ]
        q += 0.05 if checkpoint.name != "model.pt" else 0  # the windowed design, by its own file
        return {h: {str(s): _row(q + (0.1 if h == "dense" else 0) + s / 10000) for s in fr.STUDENT_SIDES}
                for h in fr.HEADS}  # fmt: skip

    specs = []

    def timed(work, spec):
        specs.append(spec)
        names = list(spec["student"]["methods"]) + list(spec["baselines"]["settings"])
        methods = {}
        for name in names:
            sides = fr.STUDENT_SIDES if name.startswith("student") else fr.BASELINE_SIDES
            ms = {str(s): s / 10 for s in sides}
            methods[name] = {"ms": ms, "engine": {s: "torch" for s in ms}, "engines": {}}
        return {"methods": methods, "env": _result()["env"], "agreement": {}}

    monkeypatch.setattr(fr, "score_student", student)
    monkeypatch.setattr(
        fr, "score_baseline", lambda m, *a: {str(s): _row(0.5 + s / 10000) for s in fr.BASELINE_SIDES}
    )
    monkeypatch.setattr(fr, "_time", timed)
    write_frontier(tmp_path, runs, Recipe(), False)
    result = json.loads((tmp_path / "frontier.json").read_text())
    assert set(result["methods"]) == {
        "student-paper",
        "student-dense",
        "student-paper-win16",
        "student-dense-win16",
        "maskclip",
        "clearclip",
        "sclip",
        "naclip",
    }
    timed = specs[0]["student"]["methods"]
    assert result["timed_seed"] == "2" and timed["student-dense"]["checkpoint"] == str(runs[2] / "model.pt")
    windowed = load_checkpoint(timed["student-dense-win16"]["checkpoint"], with_train_state=False)
    assert windowed.student_config.attn_window == 16 and timed["student-paper-win16"]["head"] == "paper"
    exports = {"onnx-paper", "onnx-dense", "onnx-paper-win16", "onnx-dense-win16"}  # + the timed model's run
    assert {m["export"] for m in timed.values()} == {f"{e}-r-seed2" for e in exports}
    assert result["methods"]["student-dense-win16"]["design"] == "win16"
    assert len(specs[0]["images"]) == 5 and specs[0]["baselines"]["templates"]
    assert result["targets"]["val"]["best"]["seed_mean"] == pytest.approx(0.90 + 512 / 10000)
    assert (tmp_path / "frontier.md").read_text().startswith("# The speed/quality frontier (ShapeWorld)")
    assert (tmp_path / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    stored_names = sorted(p.name for p in (tmp_path / "scores").iterdir())
    assert stored_names == sorted(
        [f"frontier-r-seed{s}{d}.json" for s in range(3) for d in ("", "-win16")]
        + [f"frontier-{m}.json" for m in ("maskclip", "clearclip", "sclip", "naclip")]
    )
    _check_bundle(tmp_path, result, runs)


def _check_bundle(work, result: dict, runs: dict) -> None:
    """`write_bundle` on that frontier: every setting reaches the baselines' best (0.5768), all cost
    s / 10 ms, so the cheapest is short side 128 and, by name, the dense head as trained; its median
    seed is seed 2 (0.85 between 0.80 and 0.90). The checkpoint records them; shapeworld.json has the
    choice and every method's row at that side."""
    from zeroseg.checkpoint import load_checkpoint
    from zeroseg.shapeworld.bundle import STUDENT_ROW, write_bundle

    choice = write_bundle(work, result, runs, assets=work / "assets")
    assert (choice["method"], choice["short_side"], choice["seed"]) == ("student-dense", 128, "2")
    config = load_checkpoint(work / "assets" / "shapeworld.pt", with_train_state=False).config
    assert config.head == "dense" and config.preprocess.test_short_side == 128
    assert (config.bg_thresh, config.bg_prompt) == (0.5, True)
    trained = load_checkpoint(runs[2] / "model.pt", with_train_state=False).student_config
    assert config.student.attn_window == trained.attn_window  # the design as trained: unchanged
    saved = json.loads((work / "assets" / "shapeworld.json").read_text())
    assert saved["choice"]["run"] == "students/r/seed2" and saved["rows"][STUDENT_ROW]["seed"] == 2
    assert set(saved["rows"]) == {STUDENT_ROW, "maskclip", "clearclip", "sclip", "naclip"}
    assert saved["rows"]["maskclip"]["mIoU"] == pytest.approx(0.5 + 128 / 10000)
    assert (work / "assets" / "shapeworld_teacher.pt").read_bytes() == (work / "teacher.pt").read_bytes()


def test_markdown_names_the_restart_each_seed_kept():
    from zeroseg.shapeworld.frontier_report import markdown, selection_lines

    assert selection_lines(_result()) == []  # one run per seed: nothing was selected
    r = _result()
    r["selection"] = {
        "0": {"chosen": 1, "restarts": {"0": {"run": "a", "heldout_region_loss": 0.2851},
                                        "1": {"run": "b", "heldout_region_loss": 0.2640}}},
        "1": {"chosen": 0, "restarts": {"0": {"run": "c", "heldout_region_loss": 0.2634},
                                        "1": {"run": "d", "heldout_region_loss": 0.2700}}},
    }  # fmt: skip
    text = markdown(r)
    assert "| seed | restart 0: held-out region loss | restart 1: held-out region loss | kept |" in text
    assert "| 0 | 0.2851 | 0.2640 | restart 1 |" in text and "| 1 | 0.2634 | 0.2700 | restart 0 |" in text


def test_the_thread_check_compares_each_seeds_best_at_the_checked_side():
    """`frontier_threads.thread_check`: per seed and split the best mIoU over student methods at
    THREAD_SIDES, before and after, the change, and the largest |change| against the 2-point target."""
    from zeroseg.shapeworld.frontier_threads import MAX_CHANGE, THREAD_SIDES, thread_check

    side = str(THREAD_SIDES[0])
    r = _result()
    for name, values in (("student-paper", (0.80, 0.84)), ("student-dense", (0.86, 0.88))):
        for seed, v in zip(("0", "1"), values, strict=True):
            r["methods"][name]["seeds"][seed][side] = _row(v)
    others = {"student-paper": {"0": {side: _row(0.90)}, "1": {side: _row(0.83)}},
              "student-dense": {"0": {side: _row(0.85)}, "1": {side: _row(0.85, 0.87)}}}  # fmt: skip
    check = thread_check(r, others, 1, ["val", "val2"])
    assert check["threads"] == 1 and check["sides"] == list(THREAD_SIDES)
    seed0 = check["seeds"]["0"]["val"]
    assert (seed0["frontier"], seed0["other"], seed0["methods"]) == (
        0.86,
        0.90,
        ["student-dense", "student-paper"],
    )
    assert seed0["change"] == pytest.approx(0.04)
    assert check["seeds"]["1"]["val"]["change"] == pytest.approx(0.85 - 0.88)
    assert check["seeds"]["1"]["val2"]["change"] == pytest.approx(0.87 - 0.88)
    assert check["summary"]["val"] == {"largest_change": pytest.approx(0.04), "met": False}
    assert check["summary"]["val2"]["largest_change"] == pytest.approx(0.04) and MAX_CHANGE == 0.02
