from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest

from s4mi.benchmark import summarise, write_reports
from s4mi.benchmark.runner import RunSpec


def _rows() -> list[dict]:
    rows = []
    for frac, base in ((0.1, 0.6), (1.0, 0.8)):
        for seed, d in enumerate((0.0, 0.02, -0.01)):
            rows.append(
                {
                    "method": "m",
                    "fraction": frac,
                    "seed": seed,
                    "test_val_mean_auc": base + d,
                    "epochs": 3,
                    "train_wall_s": 10.0 + seed,
                    "eval_wall_s": 1.0,
                    "peak_rss_mib": 100.0,
                }
            )
    return rows


def test_summarise_mean_and_sample_std() -> None:
    s = {r["fraction"]: r for r in summarise(_rows())}
    assert s[0.1]["test_val_mean_auc"] == pytest.approx(0.6 + 0.01 / 3)
    assert s[0.1]["test_val_mean_auc_std"] == pytest.approx(statistics.stdev([0.6, 0.62, 0.59]))
    assert s[1.0]["n_seeds"] == 3


def test_write_reports(tmp_path: Path) -> None:
    paths = write_reports(_rows(), tmp_path, command="s4mi benchmark --task cxr")
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and rows[0]["method"] == "m"
    md = paths["markdown"].read_text()
    assert "`s4mi benchmark --task cxr`" in md and "| m | 10 % | 3 | 0.6033 ± 0.0153" in md
    assert paths["plot"].stat().st_size > 1000


def test_plot_labels_the_fractions_run_plainly() -> None:
    import matplotlib.pyplot as plt

    from s4mi.benchmark.runner import _figure

    fig = _figure(summarise(_rows()), ["test_val_mean_auc"])
    fig.canvas.draw()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["10", "100"]
    assert not any(t.get_text() for t in ax.get_xticklabels(minor=True))
    plt.close(fig)


def test_plot_shows_every_metric_four_to_a_row() -> None:
    """Seven classification metrics: two rows, F1 (the S4MI paper's metric, seventh) among the panels."""
    import matplotlib.pyplot as plt

    from s4mi.benchmark.runner import _figure

    names = ["mean_auc", "sensitivity", "specificity", "accuracy", "balanced_accuracy", "ovr_accuracy", "f1_score"]
    rows = [{**r, **{f"test_{n}": r["test_val_mean_auc"] for n in names}} for r in _rows()]
    fig = _figure(summarise(rows), [f"test_{n}" for n in names])
    assert [ax.get_title() for ax in fig.axes] == names
    assert len({round(ax.get_position().y0, 3) for ax in fig.axes}) == 2, "two rows of panels"
    plt.close(fig)


def test_plot_legend_wraps_long_variants_and_sits_below_the_panels() -> None:
    import matplotlib.pyplot as plt

    from s4mi.benchmark.runner import _figure

    long_name = "mean_teacher_cxr_classification:" + ",".join(f"train#strong_augmentation#{i}#prob=0" for i in range(4))
    rows = [{**r, "method": long_name} for r in _rows()] + _rows()
    fig = _figure(summarise(rows), ["test_val_mean_auc"])
    fig.canvas.draw()
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert sorted(t.replace("\n", "") for t in texts) == sorted([long_name, "m"])
    assert max(len(line) for t in texts for line in t.split("\n")) <= 70
    renderer = fig.canvas.get_renderer()
    assert legend.get_window_extent(renderer).y1 <= fig.axes[0].get_tightbbox(renderer).y0 + 1
    plt.close(fig)


def test_grid_skips_semi_supervised_at_full_labels_and_runs_jobs_in_parallel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    from s4mi.benchmark import runner

    assert runner.method_is_semi_supervised("mean_teacher_polyp_segmentation")
    assert not runner.method_is_semi_supervised("supervised_polyp_segmentation")
    monkeypatch.setattr(runner, "task_arguments", lambda task, n: ({"phantom": task}, 100))
    running, peak = [0], [0]
    lock = threading.Lock()

    def fake_run_one(spec, out, task_args, threads, reevaluate, pretrain_seed=None):  # type: ignore[no-untyped-def]
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05 if spec.method.startswith("sup") else 0.2)  # finish out of order
        with lock:
            running[0] -= 1
        return {"method": spec.method, "fraction": spec.fraction, "seed": spec.seed, "samples": task_args}

    monkeypatch.setattr(runner, "run_one", fake_run_one)
    methods = ["mean_teacher_polyp_segmentation", "supervised_polyp_segmentation"]
    rows = runner.run_grid("polyp", methods, [0.1, 1.0], [0, 1], tmp_path, jobs=2)
    cells = [(r["method"][:4], r["fraction"], r["seed"]) for r in rows]
    assert cells == [  # grid order kept; no Mean Teacher run at 100 % labels
        ("mean", 0.1, 0),
        ("mean", 0.1, 1),
        ("supe", 0.1, 0),
        ("supe", 0.1, 1),
        ("supe", 1.0, 0),
        ("supe", 1.0, 1),
    ]
    assert peak[0] == 2
    assert rows[0]["samples"]["samples_per_epoch"] == 100  # equal steps at every fraction


def test_parallel_jobs_start_each_method_before_the_next_cell() -> None:
    from s4mi.benchmark.runner import RunSpec, start_order

    specs = [RunSpec(m, f, s) for m in ("a", "b", "c") for f in (0.05, 0.1) for s in (0, 1)]
    started = [(specs[i].method, specs[i].fraction, specs[i].seed) for i in start_order(specs)]
    naive = [(m, f, s) for f in (0.05, 0.1) for s in (0, 1) for m in ("a", "b", "c")]
    assert started == naive
    assert sorted(start_order(specs)) == list(range(len(specs)))  # every run once
    assert start_order(specs[:4]) == [0, 1, 2, 3]  # one method: grid order


def test_benchmark_without_arguments_is_the_quick_grid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from s4mi import benchmark, cli

    seen: dict = {}

    def fake_grid(task, methods, fractions, seeds, out, **kw):  # type: ignore[no-untyped-def]
        seen.update(task=task, methods=methods, fractions=fractions, seeds=seeds, out=out, **kw)
        return _rows()

    monkeypatch.setattr(benchmark, "run_grid", fake_grid)
    monkeypatch.chdir(tmp_path)
    cli.main(["benchmark"])
    assert seen["task"] == "polyp" and seen["seeds"] == [0] and seen["jobs"] == 2 and seen["threads"] == 1
    assert "mean_teacher_polyp_segmentation" in seen["methods"] and seen["fractions"] == [0.1, 1.0]
    assert (tmp_path / "outputs" / "benchmark" / "results.md").is_file()
    cli.main(["benchmark", "--task", "cxr", "--seeds", "4", "--out", "x"])
    assert seen["methods"] == ["supervised_cxr_classification"] and seen["seeds"] == [4] and seen["jobs"] == 1
    assert seen["semi_steps"] == "bundle"
    cli.main(["benchmark", "--task", "cxr", "--semi-steps", "equal", "--out", "x"])
    assert seen["semi_steps"] == "equal"


def test_method_variants() -> None:
    from s4mi.benchmark.runner import parse_method

    assert parse_method("s2mts2_cxr_classification") == ("s2mts2_cxr_classification", {})
    assert parse_method("s2mts2_cxr_classification:num_key_views=1,jcl_lambda_max=0,pretrained_ckpt=") == (
        "s2mts2_cxr_classification",
        {"num_key_views": 1, "jcl_lambda_max": 0, "pretrained_ckpt": ""},
    )
    spec = RunSpec("b:num_key_views=1,tag=x", 0.1, 2)
    assert spec.name == "b__num_key_views-1_tag-x/frac0.1/seed2", "variant names make plain folder names"
    assert RunSpec("b:ckpt=/w/p.pt", 0.1, 0).name == "b__ckpt-_w_p.pt/frac0.1/seed0", "a path value stays one folder"
    with pytest.raises(ValueError, match="key=value"):
        parse_method("b:num_key_views")


def test_no_hash_in_run_folders(tmp_path: Path) -> None:
    """MONAI's config parser rewrites "#" to "::" inside the output_dir it is given: a run folder with "#" in its
    name would train in one folder and be looked for in another."""
    from monai.bundle import ConfigParser

    from s4mi.benchmark import run_grid

    assert ConfigParser({"output_dir": "r/a#b"}).get_parsed_content("output_dir") == "r/a::b"
    spec = RunSpec("m:unsup_weight#_target_=LinearRamp,train#aug#3#prob=0", 0.1, 0)
    assert "#" not in spec.name and spec.name.startswith("m__unsup_weight._target_-LinearRamp_train.aug.3.prob-0/")
    with pytest.raises(ValueError, match="'#'"):
        run_grid("cxr", ["m"], [0.1], [0], tmp_path / "a#b")


def test_long_variant_names_make_short_unique_folders(tmp_path: Path) -> None:
    """A variant with many settings must still make a folder the file system accepts (names up to 255 bytes)."""
    settings = "consistency_rampup_epochs=15,epoch_length=22,train#strong_augmentation#2#prob=0,train#strong_augmentation#3#prob=0"
    settings += ",train#trainer#teacher_train_mode=true,train#trainer#joint_forward=false"
    long_a = f"mean_teacher_cxr_classification:unsup_weight#_target_=s4mi.handlers.ramps.LinearRamp,{settings}"
    long_b = long_a.replace("joint_forward=false", "joint_forward=true")
    assert len(long_a) > 255, "longer than a file system allows, as written plainly"
    a, b = (RunSpec(m, 0.1, 0).name.split("/")[0] for m in (long_a, long_b))
    assert len(a) <= 200 and len(b) <= 200
    assert a != b, "two variants that differ only past the cut keep different folders"
    assert a.startswith("mean_teacher_cxr_classification__unsup_weight._target_-s4mi.handlers.ramps.LinearRamp_")
    assert a == RunSpec(long_a, 0.5, 1).name.split("/")[0], "the same variant always gets the same folder"
    (tmp_path / a).mkdir()  # accepted by the file system
    short = "b:num_key_views=1"
    assert RunSpec(short, 0.1, 0).name.split("/")[0] == "b__num_key_views-1", "short names are unchanged"


@pytest.mark.slow
def test_pretraining_runs_once_per_seed_and_serves_every_fraction(tmp_path: Path) -> None:
    """A two-stage bundle in the grid: one pretraining (shared by both fractions, run two at a time), two fine-tunes."""
    from s4mi.benchmark import run_grid

    small = {"batch_size": 4, "unlabeled_batch_size": 4, "pretrain_batch_size": 4, "max_epochs": 1}
    rows = run_grid(
        "cxr",
        ["s2mts2_cxr_classification"],
        [0.2, 0.4],
        [0],
        tmp_path,
        overrides={**small, "pretrain_epochs": 1},
        phantom_n=40,
        threads=1,
        jobs=2,
    )
    assert sorted(r["fraction"] for r in rows) == [0.2, 0.4]
    pre = list((tmp_path / "pretrain").rglob("pretrained.pt"))
    assert len(pre) == 1, f"one pretraining per (method, seed), found {pre}"
    assert rows[0]["pretrain_wall_s"] == rows[1]["pretrain_wall_s"] > 0
    for r in rows:
        log = (tmp_path / "runs" / RunSpec(r["method"], r["fraction"], 0).name / "train.log").read_text()
        assert "loaded the pretrained backbone from " + str(pre[0]) in log
    paths = write_reports(rows, tmp_path)
    assert "pretrain time (s)" in paths["markdown"].read_text()
    assert "ran once per method" not in paths["markdown"].read_text()
    # --pretrain-seed 0: seed 1 fine-tunes from seed 0's pretraining instead of pretraining again
    more = run_grid(
        "cxr",
        ["s2mts2_cxr_classification"],
        [0.2],
        [1],
        tmp_path,
        overrides={**small, "pretrain_epochs": 1},
        phantom_n=40,
        threads=1,
        pretrain_seed=0,
    )
    assert list((tmp_path / "pretrain").rglob("pretrained.pt")) == pre
    assert more[0]["pretrain_seed"] == 0 and more[0]["seed"] == 1
    log = (tmp_path / "runs" / RunSpec(more[0]["method"], 0.2, 1).name / "train.log").read_text()
    assert "loaded the pretrained backbone from " + str(pre[0]) in log
    text = write_reports(rows + more, tmp_path)["markdown"].read_text()
    assert "pretraining ran once per method (seed 0)" in text


def test_first_stage_folders_are_shared_by_second_stage_variants(tmp_path: Path) -> None:
    from s4mi.benchmark.runner import first_stage_dir, method_is_semi_supervised

    opl = "online_pseudolabel_polyp_segmentation"
    offline, online = f"{opl}:online=false,teacher_source=teacher", f"{opl}:online=true"
    a, uses_labels = first_stage_dir(RunSpec(offline, 0.2, 0), tmp_path)
    assert uses_labels, "the teacher stage trains on the labelled share"
    assert a == first_stage_dir(RunSpec(online, 0.2, 0), tmp_path)[0], "student variants share the teacher"
    assert a != first_stage_dir(RunSpec(online, 0.4, 0), tmp_path)[0], "one teacher per label fraction"
    assert a != first_stage_dir(RunSpec(online, 0.2, 1), tmp_path)[0], "one teacher per seed"
    assert a != first_stage_dir(RunSpec(online, 0.2, 1), tmp_path, 0)[0], "a teacher reads labels: per seed always"
    assert a != first_stage_dir(RunSpec(f"{opl}:teacher_momentum=0.9", 0.2, 0), tmp_path)[0], "a stage-0 setting"
    # self-supervised pretraining reads no label: one per seed whatever the fraction
    s2 = "s2mts2_cxr_classification"
    b, uses_labels = first_stage_dir(RunSpec(f"{s2}:max_epochs=3", 0.1, 0), tmp_path)
    assert not uses_labels and b == first_stage_dir(RunSpec(s2, 0.5, 0), tmp_path)[0]
    assert b != first_stage_dir(RunSpec(f"{s2}:jcl_lambda_max=0", 0.1, 0), tmp_path)[0]
    assert b != first_stage_dir(RunSpec(s2, 0.1, 1), tmp_path)[0], "one pretraining per seed by default"
    assert b == first_stage_dir(RunSpec(s2, 0.1, 1), tmp_path, pretrain_seed=0)[0], "or one for all seeds"
    # an overlay that trains nothing is not semi-supervised: it runs at 100 % labels too
    assert method_is_semi_supervised(online)
    assert not method_is_semi_supervised(f"{opl}:overlay=export_teacher")
    with pytest.raises(FileNotFoundError, match="overlay"):
        method_is_semi_supervised(f"{opl}:overlay=nope")


def _datalist(path: Path, n_train: int = 10, n_unlabeled: int = 0) -> Path:
    import json

    data = {
        "training": [{"image": f"i{i}.png", "label": f"m{i}.png"} for i in range(n_train)],
        "validation": [{"image": "v.png", "label": "vm.png"}],
        "test": [{"image": "t.png", "label": "tm.png"}],
    }
    if n_unlabeled:
        data["unlabeled"] = [{"image": f"u{i}.png"} for i in range(n_unlabeled)]
    path.write_text(json.dumps(data))
    return path


def _fake_grid_run(monkeypatch: pytest.MonkeyPatch) -> list:
    from s4mi.benchmark import runner

    seen: list = []

    def fake_run_one(spec, out, task_args, threads, reevaluate, pretrain_seed=None):  # type: ignore[no-untyped-def]
        seen.append((spec.method[:4], spec.fraction))
        return {"method": spec.method, "fraction": spec.fraction, "seed": spec.seed}

    monkeypatch.setattr(runner, "run_one", fake_run_one)
    return seen


def test_grid_runs_semi_supervised_at_full_labels_on_a_datalist_with_its_own_unlabelled_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from s4mi.benchmark import runner

    seen = _fake_grid_run(monkeypatch)
    methods = ["mean_teacher_polyp_segmentation", "supervised_polyp_segmentation"]
    task = str(_datalist(tmp_path / "own.json", n_unlabeled=5))
    runner.run_grid(task, methods, [1.0], [0], tmp_path / "a")
    assert seen == [("mean", 1.0), ("supe", 1.0)], "the datalist's own unlabelled images feed Mean Teacher at 100 %"
    assert "skipping" not in capsys.readouterr().out

    seen.clear()
    task = str(_datalist(tmp_path / "plain.json"))
    runner.run_grid(task, methods, [0.5, 1.0], [0, 1], tmp_path / "b")
    assert seen == [("mean", 0.5), ("mean", 0.5), ("supe", 0.5), ("supe", 0.5), ("supe", 1.0), ("supe", 1.0)]
    out = capsys.readouterr().out
    assert "skipping mean_teacher_polyp_segmentation at 100 % labels (2 run(s))" in out, out
    assert "no 'unlabeled' section" in out and "supervised_polyp_segmentation at" not in out

    # finished runs are reused, and the console says so
    done = tmp_path / "b" / "runs" / RunSpec("supervised_polyp_segmentation", 0.5, 1).name / "result.json"
    done.parent.mkdir(parents=True)
    done.write_text("{}")
    runner.run_grid(task, methods, [0.5, 1.0], [0, 1], tmp_path / "b")
    assert f"1 of 6 run(s) already finished in {tmp_path / 'b' / 'runs'} are reused" in capsys.readouterr().out


def test_split_counts_and_labels_column(tmp_path: Path) -> None:
    import json

    from s4mi.benchmark.runner import split_counts

    assert split_counts(tmp_path) == {}
    (tmp_path / "split.json").write_text(json.dumps({"training": [{}] * 20, "unlabeled": [{}] * 80}))
    assert split_counts(tmp_path) == {"labelled": 20, "unlabelled": 80, "labelled_share": 0.2}
    # asked 100 %, trained on 20 of 100 images (a datalist with its own unlabelled section); asked 10 %: 7 then 8
    rows = [{**r, "labelled": 20, "unlabelled": 80, "labelled_share": 0.2} for r in _rows() if r["fraction"] == 1.0]
    rows += [
        {**r, "labelled": 7 + r["seed"] % 2, "unlabelled": 63, "labelled_share": (7 + r["seed"] % 2) / 70}
        for r in _rows()
        if r["fraction"] == 0.1
    ]
    paths = write_reports(rows, tmp_path)
    md = paths["markdown"].read_text()
    assert "| m | 20 (20 %) | 3 |" in md and "| m | 7–8 (10.5 %) | 3 |" in md, md
    assert "| m | 100 % |" not in md and "from its split.json" in md
    with open(paths["csv"]) as f:
        first = next(csv.DictReader(f))
    assert (first["fraction"], first["labelled"], first["unlabelled"]) == ("0.1", "7", "63")


def test_run_one_records_the_split_it_trained_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_one reads the labelled count from the run's split.json (the bundle's record), not from the fraction."""
    import json

    from s4mi.benchmark import runner
    from s4mi.bundle.stages import StageRun

    def fake_run_command(cmd, log, env):  # type: ignore[no-untyped-def]
        run_dir = Path(cmd[cmd.index("--output_dir") + 1])
        (run_dir / "split.json").write_text(json.dumps({"training": [{}] * 30, "unlabeled": [{}] * 10}))
        (run_dir / "metrics.jsonl").write_text('{"epoch": 1, "val_mean_dice": 0.5}\n')
        (run_dir / "test_metrics.jsonl").write_text('{"epoch": 1, "val_mean_dice": 0.4}\n')
        return StageRun(0, 1.0, 100.0)

    monkeypatch.setattr(runner, "run_command", fake_run_command)
    spec = RunSpec("mean_teacher_polyp_segmentation", 1.0, 0)
    row = runner.run_one(spec, tmp_path, {"datalist": "x.json"})
    assert (row["labelled"], row["unlabelled"], row["labelled_share"]) == (30, 10, 0.75)
    assert row["test_mean_dice"] == 0.4
    saved = json.loads((tmp_path / "runs" / spec.name / "result.json").read_text())
    assert saved["labelled"] == 30
    # a result written before the counts were recorded gets them from the run's split.json
    result = tmp_path / "runs" / spec.name / "result.json"
    result.write_text(json.dumps({k: v for k, v in saved.items() if "labelled" not in k}))
    assert runner.run_one(spec, tmp_path, {"datalist": "x.json"})["labelled"] == 30


@pytest.mark.slow
def test_full_labels_with_own_unlabelled_section_trains_mean_teacher(tmp_path: Path) -> None:
    """Real runs at fraction 1 on a datalist with its own unlabelled section: Mean Teacher trains on it, and the
    table reports the labelled count and share the runs' split.json record."""
    import json

    from s4mi.benchmark import run_grid
    from s4mi.data.phantoms import make_phantom

    path = Path(make_phantom("polyp", tmp_path / "polyp", n=30, seed=0, image_size=64))
    data = json.loads(path.read_text())
    train = data["training"]
    data["training"], data["unlabeled"] = train[:12], [{"image": it["image"]} for it in train[12:]]
    own = path.parent / "own.json"
    own.write_text(json.dumps(data))
    n_unlabeled = len(train) - 12
    methods = ["mean_teacher_polyp_segmentation", "supervised_polyp_segmentation"]
    small = {"max_epochs": 1, "batch_size": 4, "unlabeled_batch_size": 4}
    rows = run_grid(str(own), methods, [1.0], [0], tmp_path / "out", overrides=small, threads=1)
    assert sorted(r["method"] for r in rows) == sorted(methods), "Mean Teacher runs at 100 % labels"
    for r in rows:
        assert (r["labelled"], r["unlabelled"]) == (12, n_unlabeled), r
    log = (tmp_path / "out" / "runs" / RunSpec(methods[0], 1.0, 0).name / "train.log").read_text()
    assert "Epoch[1] Complete" in log
    md = write_reports(rows, tmp_path / "out")["markdown"].read_text()
    share = f"{100 * 12 / len(train):.3g}"
    assert f"| mean_teacher_polyp_segmentation | 12 ({share} %) | 1 |" in md, md


def test_reports_add_each_class_auc_when_the_runs_recorded_it(tmp_path: Path) -> None:
    from s4mi.benchmark.runner import per_class_auc

    csv_file = tmp_path / "per_class_metrics.csv"
    csv_file.write_text("class,auc,f1\nMEL,0.7,0.2\nNV,0.9,0.5\nmean,0.8,0.35\n")
    assert per_class_auc(csv_file) == {"MEL": 0.7, "NV": 0.9}
    assert per_class_auc(tmp_path / "none.csv") == {}

    rows = _rows()
    for r, (mel, nv) in zip(rows, ((0.6, 0.8), (0.7, 0.9), (0.8, 1.0), (0.5, 0.5))):
        r["per_class_auc"] = {"MEL": mel, "NV": nv}  # the 100 % runs: one seed recorded it
    md = write_reports(rows, tmp_path / "out")["markdown"].read_text()
    section = md[md.index("Test AUC of each class") :]
    assert "| method | labels | seeds | MEL | NV |" in section
    assert "| m | 10 % | 3 | 0.700 ± 0.100 | 0.900 ± 0.100 |" in section
    assert "| m | 100 % | 3 | 0.500 ± 0.000 | 0.500 ± 0.000 |" in section
    assert "Test AUC of each class" not in write_reports(_rows(), tmp_path / "plain")["markdown"].read_text()


def test_semi_steps_equal_gives_semi_supervised_runs_the_supervised_steps_per_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from s4mi.benchmark import runner
    from s4mi.bundle import locate_bundle_root
    from s4mi.bundle.overrides import load_stage_config
    from s4mi.bundle.stages import defined_overrides

    monkeypatch.setattr(runner, "task_arguments", lambda task, n: ({"phantom": task}, 691))
    seen: list[dict] = []
    monkeypatch.setattr(runner, "run_one", lambda spec, out, task_args, *a: seen.append(task_args) or {})
    methods = ["cross_teaching_skin_segmentation", "supervised_skin_segmentation"]
    runner.run_grid("skin_seg", methods, [0.1], [0], tmp_path)
    assert "epoch_length" not in seen[-1], "default: each semi-supervised bundle keeps its own epoch_length"
    runner.run_grid("skin_seg", methods, [0.1], [0], tmp_path, semi_steps="equal")
    task_args = seen[-1]
    with pytest.raises(ValueError, match="equal_steps"):
        runner.run_grid("skin_seg", methods, [0.1], [0], tmp_path, semi_steps="equal", equal_steps=False)
    with pytest.raises(ValueError, match="'bundle' or 'equal'"):
        runner.run_grid("skin_seg", methods, [0.1], [0], tmp_path, semi_steps="supervised")

    def steps(bundle: str, **variant: int) -> int | None:
        configs = Path(locate_bundle_root(bundle)) / "configs"
        args = defined_overrides([configs / "train.json"], configs, {**task_args, **variant})
        if "epoch_length" not in args:
            return None
        parser = load_stage_config(configs / "train.json")
        for k, v in args.items():
            parser[k] = v
        return parser.get_parsed_content("epoch_length")

    # the supervised run draws the 691 training images per epoch in batches of 8 (86 full, the last of 3); cross
    # teaching takes the 86 full batches of 8 labelled (and 8 unlabelled) images
    assert steps("cross_teaching_skin_segmentation") == 86
    assert steps("cross_teaching_skin_segmentation", batch_size=16) == 43, "a variant's batch size is the one divided"
    assert steps("mean_teacher_polyp_segmentation") == 43
    assert steps("supervised_skin_segmentation") is None, "a supervised bundle has no epoch_length to set"


def test_reused_semi_supervised_runs_of_other_steps_per_epoch_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from s4mi.benchmark import runner

    monkeypatch.setattr(runner, "task_arguments", lambda task, n: ({"phantom": task}, 700))
    monkeypatch.setattr(runner, "run_one", lambda spec, *a: {})
    for method, fields in [
        ("cross_teaching_skin_segmentation", {}),  # trained with the bundle's own epoch_length
        ("supervised_skin_segmentation", {}),
    ]:
        run = tmp_path / "runs" / method / "frac0.1" / "seed0"
        run.mkdir(parents=True)
        (run / "result.json").write_text(json.dumps(fields))
    methods = ["cross_teaching_skin_segmentation", "supervised_skin_segmentation"]
    runner.run_grid("skin_seg", methods, [0.1], [0], tmp_path)
    assert "warning" not in capsys.readouterr().out
    runner.run_grid("skin_seg", methods, [0.1], [0], tmp_path, semi_steps="equal")
    out = capsys.readouterr().out
    assert "warning: 1 reused semi-supervised run(s)" in out and "cross_teaching_skin_segmentation/frac0.1" in out
    (tmp_path / "runs" / methods[0] / "frac0.1" / "seed0" / "result.json").write_text('{"semi_steps": "equal"}')
    runner.run_grid("skin_seg", methods, [0.1], [0], tmp_path, semi_steps="equal")
    assert "warning" not in capsys.readouterr().out
    runner.run_grid("skin_seg", methods, [0.1], [0], tmp_path)
    assert "warning: 1 reused" in capsys.readouterr().out
