"""benchmarks/gradcam_overlays.py: it finds the scratch run and the best curriculum by validation from the runs'
result.json (not from their folder names), and draws the figure from their models."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
B = "curricular_ssl_cxr_classification"


def _script():
    spec = importlib.util.spec_from_file_location("gradcam_overlays", BENCHMARKS / "gradcam_overlays.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(out: Path, folder: str, method: str, seed: int, val_aucs: list[float], fraction: float = 0.05) -> Path:
    """A finished run as `s4mi benchmark` leaves it: result.json (with the full method) and metrics.jsonl."""
    run = out / "runs" / folder / f"frac{fraction:g}" / f"seed{seed}"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({"method": method, "fraction": fraction, "seed": seed}))
    (run / "metrics.jsonl").write_text(
        "".join(json.dumps({"epoch": i, "val_mean_auc": v}) + "\n" for i, v in enumerate(val_aucs))
    )
    return run


def test_pick_reads_methods_from_result_json(tmp_path: Path) -> None:
    g = _script()
    _run(tmp_path, f"{B}__pretrained_ckpt-", f"{B}:pretrained_ckpt=", 0, [0.9, 0.95])  # best, but scratch
    _run(tmp_path, B, B, 0, [0.6, 0.7])
    _run(tmp_path, B, B, 1, [0.7])  # mean of best: 0.7
    _run(tmp_path, f"{B}__c", f"{B}:curriculum=reconstruction:5+rotation:5+contrastive:10", 0, [0.72])
    _run(tmp_path, f"{B}__c", f"{B}:curriculum=reconstruction:5+rotation:5+contrastive:10", 1, [0.7])  # 0.71
    _run(tmp_path, f"{B}__r", f"{B}:curriculum=rotation:20", 0, [0.99])  # a single task is no curriculum
    _run(tmp_path, f"{B}__other", f"{B}:curriculum=rotation:20", 0, [0.99], fraction=0.1)
    found = g.runs_by_method(tmp_path, "0.05")
    assert set(found[B]) == {0, 1} and f"{B}:curriculum=rotation:20" in found
    assert g.pick(found) == (f"{B}:pretrained_ckpt=", f"{B}:curriculum=reconstruction:5+rotation:5+contrastive:10")
    assert g.is_curriculum(B) and not g.is_curriculum(f"{B}:curriculum=jigsaw:20")
    with pytest.raises(SystemExit, match="no scratch run"):
        g.pick({B: found[B]})


def test_figure_from_two_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from monai.networks.nets import DenseNet121

    g = _script()
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    items = []
    for i in range(3):
        img, mask = data / f"img{i}.png", data / f"mask{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(img)
        m = np.zeros((40, 40), np.uint8)
        m[5:35, 5:18] = m[5:35, 22:35] = 255
        Image.fromarray(m).save(mask)
        items.append({"image": str(img), "mask": str(mask), "label": [0, int(i > 0), 1]})
    torch.manual_seed(0)
    state = DenseNet121(spatial_dims=2, in_channels=1, out_channels=3).state_dict()
    for folder, method, auc in ((f"{B}__pretrained_ckpt-", f"{B}:pretrained_ckpt=", 0.6), (B, B, 0.7)):
        run = _run(tmp_path, folder, method, 0, [auc])
        (run / "split.json").write_text(json.dumps({"test": items}))
        (run / "models").mkdir()
        torch.save(state, run / "models" / "model.pt")
    monkeypatch.setattr(sys, "argv", ["gradcam_overlays.py", str(tmp_path), "--n", "2"])
    g.main()
    assert (tmp_path / "gradcam_overlays.png").stat().st_size > 10_000

    (tmp_path / "runs" / B / "frac0.05" / "seed0" / "models" / "model.pt").unlink()
    with pytest.raises(SystemExit, match="model.pt"):
        g.main()
