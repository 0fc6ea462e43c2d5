"""The `s4mi` command line, end to end on small phantoms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from s4mi.cli import _parse_overrides, main


def test_data_make_check_and_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["data", "make", "cxr", "--out", str(tmp_path / "cxr"), "--n", "40", "--seed", "1"])
    datalist = tmp_path / "cxr" / "datalist.json"
    assert "training 28" in capsys.readouterr().out
    main(["data", "check", str(datalist)])
    assert "valid" in capsys.readouterr().out
    for name in ("a.json", "b.json"):
        main(["split", str(datalist), "--fraction", "0.25", "--seed", "3", "--out", str(tmp_path / name)])
    a, b = (tmp_path / "a.json").read_bytes(), (tmp_path / "b.json").read_bytes()
    assert a == b, "the same seed must give the same split, byte for byte"
    split = json.loads(a)
    assert split["unlabeled"] and all(set(i) == {"image"} for i in split["unlabeled"])
    assert not Path(split["training"][0]["image"]).is_absolute(), "the written split keeps relative paths"


def test_split_protocols(tmp_path: Path) -> None:
    main(["data", "make", "polyp", "--out", str(tmp_path / "p"), "--n", "50", "--size", "32"])
    main(["split", str(tmp_path / "p" / "datalist.json"), "--protocol", "pranet", "--out", str(tmp_path / "pr.json")])
    pr = json.loads((tmp_path / "pr.json").read_text())
    assert pr["unlabeled"] and pr["training"] and pr["validation"]
    main(["data", "make", "skin", "--out", str(tmp_path / "s"), "--n", "50", "--size", "32"])
    main(["split", str(tmp_path / "s" / "datalist.json"), "--protocol", "isic2018", "--out", str(tmp_path / "i.json")])
    isic = json.loads((tmp_path / "i.json").read_text())
    total = sum(len(isic[k]) for k in ("training", "unlabeled", "validation", "test"))
    assert total == 50 and len(isic["test"]) == 10


def test_split_needs_fraction_and_bad_datalist_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"training": [{"label": [1]}]}')
    with pytest.raises(ValueError, match="bad.json"):
        main(["split", str(bad), "--fraction", "0.5", "--out", str(tmp_path / "o.json")])
    main(["data", "make", "polyp", "--out", str(tmp_path / "p"), "--n", "10", "--size", "32"])
    with pytest.raises(SystemExit, match="--fraction"):
        main(["split", str(tmp_path / "p" / "datalist.json"), "--out", str(tmp_path / "o.json")])


def test_parse_overrides() -> None:
    assert _parse_overrides(["max_epochs=3", "spatial_size=[32, 32]", "name=abc"]) == {
        "max_epochs": 3,
        "spatial_size": [32, 32],
        "name": "abc",
    }
    with pytest.raises(SystemExit, match="key=value"):
        _parse_overrides(["oops"])


def test_data_make_splits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(
        [
            "data",
            "make",
            "cxr",
            "--out",
            str(tmp_path / "c"),
            "--n",
            "20",
            "--size",
            "32",
            "--splits",
            "0.5",
            "0.2",
            "0.3",
        ]
    )
    assert "training 10, validation 4, test 6" in capsys.readouterr().out


def test_run_names_a_missing_stage() -> None:
    with pytest.raises(SystemExit, match="no stage 'pretrain'"):
        main(["run", "supervised_cxr_classification", "--stages", "pretrain", "--max_epochs", "1"])


def test_run_names_a_missing_bundle() -> None:
    with pytest.raises(SystemExit, match="s4mi run: bundle 'no_such_bundle' not found"):
        main(["run", "no_such_bundle"])
