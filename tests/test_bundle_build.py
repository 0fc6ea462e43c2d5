"""s4mi.bundle.build: bundles merged from parts, and `s4mi bundles build --check` on the repository's bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from s4mi.bundle.build import DELETE, REQUIRED, Keyed, Replace, build, build_bundle, bundle_names, check, merge, render
from s4mi.cli import main as cli

REPO_BUNDLES = Path(__file__).resolve().parents[1] / "bundles"


def test_merge_dicts_deep_and_lists_whole():
    base = {"a": 1, "d": {"x": 1, "y": [1, 2]}, "keep": {"k": 0}}
    over = {"a": 2, "d": {"y": [3], "z": 4}, "new": True}
    out = merge(base, over)
    assert out == {"a": 2, "d": {"x": 1, "y": [3], "z": 4}, "keep": {"k": 0}, "new": True}
    assert list(out) == ["a", "d", "new", "keep"]  # a new key follows the key before it in the later part
    assert base == {"a": 1, "d": {"x": 1, "y": [1, 2]}, "keep": {"k": 0}}  # inputs untouched


def test_merge_places_new_keys_after_their_anchor_in_the_later_part():
    """MONAI instantiates references in key order, so a part must be able to say where a new key goes."""
    base = {"model": "@network", "optimizer": "@optimizer", "trainer": "@trainer"}
    out = merge(base, {"model": "@network", "key_encoder": "@key_encoder", "queue": "@queue"})
    assert list(out) == ["model", "key_encoder", "queue", "optimizer", "trainer"]
    assert list(merge(base, {"teacher": "@teacher"})) == ["model", "optimizer", "trainer", "teacher"]


def test_merge_replace_and_delete():
    base = {"net": {"_target_": "UNet", "channels": [16], "strides": [2]}, "gone": 1}
    out = merge(base, {"net": Replace({"_target_": "FlexibleUNet", "backbone": "b"}), "gone": DELETE})
    assert out == {"net": {"_target_": "FlexibleUNet", "backbone": "b"}}
    assert type(render(out, "t")["net"]) is dict  # !replace leaves no marker in the built file


def test_keyed_list_merges_by_name_and_inserts_before():
    base = {"handlers": Keyed(lr={"_target_": "Lr"}, validate={"_target_": "Val"}, stats={"_target_": "Stats"})}
    over = {
        "handlers": Keyed(
            validate_student={"_before_": "validate", "_target_": "Val", "validator": "@s"},
            stats={"iteration_log": False},
            monitor={"_target_": "Monitor"},
            lr=DELETE,
        )
    }
    rendered = render(merge(base, over), "t")
    assert rendered["handlers"] == [
        {"_target_": "Val", "validator": "@s"},
        {"_target_": "Val"},
        {"_target_": "Stats", "iteration_log": False},
        {"_target_": "Monitor"},
    ]


def test_render_orders_top_level_like_the_model_zoo_and_target_first():
    config = {
        "run": ["$@x.run()"],
        "network_def": {"in_channels": 1, "_target_": "UNet"},
        "output_dir": "$@bundle_root + '/runs'",
        "imports": ["$import torch"],
        "seed": 0,
        "initialize": ["$f()"],
    }
    out = render(config, "t")
    assert list(out) == ["imports", "seed", "output_dir", "network_def", "initialize", "run"]
    assert list(out["network_def"]) == ["_target_", "in_channels"]


@pytest.mark.parametrize(
    "config, message",
    [
        ({"a": {"b": REQUIRED}}, "a#b is <required>"),
        ({"a": DELETE}, "!delete at a removes nothing"),
        ({"h": Keyed(x={"_before_": "nope", "v": 1})}, "_before_: nope"),
    ],
)
def test_render_refuses_leftovers(config, message):
    with pytest.raises(ValueError, match=message):
        render(config, "b/configs/train.json")


def _parts_tree(root: Path) -> Path:
    parts = root / "_parts"
    (parts / "bundles").mkdir(parents=True)
    (parts / "base.yaml").write_text(
        "_stage.json:\n"
        "  seed: 0\n"
        "  lr: <required>\n"
        "  train:\n"
        "    handlers: !keyed\n"
        "      lr: {_target_: LrScheduleHandler}\n"
        "      validate: {_target_: ValidationHandler}\n"
        "train.json: {_extends_: _stage.json}\n"
        "logging.conf: |\n"
        "  [loggers]\n"
    )
    (parts / "method.yaml").write_text(
        "train.json:\n"
        "  train:\n"
        "    handlers: !keyed\n"
        "      student: {_before_: validate, _target_: ValidationHandler, validator: '@s'}\n"
        "pretrain.json:\n"
        "  _extends_: _stage.json\n"
        "  train: {handlers: !keyed {validate: !delete ''}}\n"
    )
    (parts / "bundles" / "toy.yaml").write_text("parts: [base, method]\n_stage.json: {lr: 0.1}\n")
    return root


def test_build_bundle_extends_templates_and_writes_text_files(tmp_path):
    root = _parts_tree(tmp_path)
    files = build_bundle(root / "_parts", "toy")
    assert set(files) == {"train.json", "pretrain.json", "logging.conf"}  # templates are not written
    train = json.loads(files["train.json"])
    assert train["lr"] == 0.1 and train["seed"] == 0
    assert [h["_target_"] for h in train["train"]["handlers"]] == [
        "LrScheduleHandler",
        "ValidationHandler",
        "ValidationHandler",
    ]
    assert train["train"]["handlers"][1] == {"_target_": "ValidationHandler", "validator": "@s"}
    pretrain = json.loads(files["pretrain.json"])
    assert pretrain["train"]["handlers"] == [{"_target_": "LrScheduleHandler"}]
    assert files["logging.conf"] == "[loggers]\n"
    assert files["train.json"].startswith('{\n    "seed": 0,')  # MONAI bundle JSON: 4-space indent


def test_build_then_check_names_the_hand_edited_file(tmp_path):
    root = _parts_tree(tmp_path)
    assert {k: sorted(v) for k, v in build(root).items()} == {"toy": ["logging.conf", "pretrain.json", "train.json"]}
    assert check(root) == []
    assert build(root) == {}  # nothing rewritten when up to date
    target = root / "toy" / "configs" / "train.json"
    target.write_text(target.read_text().replace('"lr": 0.1', '"lr": 0.2'))
    problems = check(root)
    assert len(problems) == 1 and str(target) in problems[0] and "differs" in problems[0]
    assert '-    "lr": 0.2,' in problems[0] and '+    "lr": 0.1,' in problems[0]
    (root / "toy" / "configs" / "stray.json").write_text("{}")
    assert any("stray.json: not built from any part" in p for p in check(root))


def test_missing_required_names_bundle_file_and_key(tmp_path):
    root = _parts_tree(tmp_path)
    (root / "_parts" / "bundles" / "toy.yaml").write_text("parts: [base, method]\n")
    with pytest.raises(ValueError, match=r"toy/configs/train.json: lr is <required>"):
        build_bundle(root / "_parts", "toy")


def test_unknown_part_and_template_are_named(tmp_path):
    root = _parts_tree(tmp_path)
    (root / "_parts" / "bundles" / "toy.yaml").write_text("parts: [base, nomethod]\n")
    with pytest.raises(FileNotFoundError, match="part 'nomethod' not found"):
        build_bundle(root / "_parts", "toy")
    (root / "_parts" / "bundles" / "toy.yaml").write_text(
        "parts: [base]\n_stage.json: {lr: 1}\nx.json: {_extends_: _y.json}\n"
    )
    with pytest.raises(ValueError, match="toy/configs/x.json: _extends_ names '_y.json'"):
        build_bundle(root / "_parts", "toy")


def test_repository_bundles_match_their_parts(capsys):
    """What CI and the before-stop hook check: every committed bundle config is what its parts build."""
    folders = sorted(p.name for p in REPO_BUNDLES.iterdir() if (p / "configs" / "metadata.json").is_file())
    assert bundle_names(REPO_BUNDLES) == folders and len(folders) >= 13  # every committed bundle is built from parts
    cli(["bundles", "build", "--check"])
    assert "matches its parts" in capsys.readouterr().out


def test_check_fails_on_a_hand_edit_of_a_generated_file(tmp_path, capsys):
    copy = tmp_path / "bundles"
    shutil.copytree(REPO_BUNDLES, copy, ignore=shutil.ignore_patterns("models", "runs", "eval"))
    target = copy / "mean_teacher_cxr_classification" / "configs" / "train.json"
    config = json.loads(target.read_text())
    config["ema_momentum"] = 0.5
    target.write_text(json.dumps(config, indent=4) + "\n")
    with pytest.raises(SystemExit, match="1 file"):
        cli(["bundles", "build", "--check", "--bundles-dir", str(copy)])
    assert f"{target}: differs from what its parts build" in capsys.readouterr().out
    cli(["bundles", "build", "--bundles-dir", str(copy)])
    assert json.loads(target.read_text())["ema_momentum"] == 0.95


@pytest.mark.parametrize("name", bundle_names(REPO_BUNDLES))
def test_every_bundle_version_has_a_changelog_entry(name):
    """The model zoo's check: metadata.json's changelog holds an entry for its `version`, newest entry first."""
    meta = json.loads((REPO_BUNDLES / name / "configs" / "metadata.json").read_text())
    changelog = meta.get("changelog", {})
    assert meta["version"] in changelog, (
        f"{name}: metadata version {meta['version']} has no changelog entry (has {sorted(changelog)}); "
        f"add it to bundles/_parts/bundles/{name}.yaml and run `s4mi bundles build`"
    )
    assert next(iter(changelog)) == meta["version"], f"{name}: the newest changelog entry should come first"
