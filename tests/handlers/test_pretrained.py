"""s4mi.handlers.pretrained: when a stage starts from pretrained weights, and when it does not."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.networks.nets import DenseNet121

from s4mi.handlers import load_pretrained_backbone, load_teacher, save_teachers


def _net() -> DenseNet121:
    return DenseNet121(spatial_dims=2, in_channels=1, out_channels=3, init_features=8, growth_rate=4, block_config=(1,))


def test_backbone_loads_except_the_head_and_not_when_resuming_or_empty(tmp_path: Path) -> None:
    src, dst = _net(), _net()
    with torch.no_grad():
        for p in src.parameters():
            p.fill_(0.5)
    torch.save({"model": src.state_dict()}, tmp_path / "pretrained.pt")
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    assert load_pretrained_backbone(dst, tmp_path / "pretrained.pt", resume_ckpt="runs/resume/c.pt")
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())  # resuming: untouched
    load_pretrained_backbone(dst, "")  # no pretrained file: from scratch
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())
    skipped = load_pretrained_backbone(dst, tmp_path / "pretrained.pt")
    assert skipped == ["class_layers.out.weight", "class_layers.out.bias"]
    assert torch.equal(dst.features.conv0.weight, src.features.conv0.weight)
    assert torch.equal(dst.class_layers.out.weight, before["class_layers.out.weight"])
    with pytest.raises(FileNotFoundError, match="run the bundle's configs/pretrain.json first"):
        load_pretrained_backbone(dst, tmp_path / "missing.pt")


def test_load_teacher_honours_enabled_and_resume(tmp_path: Path) -> None:
    teacher = torch.nn.Linear(2, 1)
    with torch.no_grad():
        teacher.weight.fill_(2.0)
    torch.save(teacher.state_dict(), tmp_path / "t.pt")
    save_teachers(tmp_path / "teachers.pt", teacher=tmp_path / "t.pt")
    student = torch.nn.Linear(2, 1)
    w = student.weight.clone()
    load_teacher(student, tmp_path / "teachers.pt", "teacher", role="student", enabled=False)
    load_teacher(student, tmp_path / "teachers.pt", "teacher", role="student", resume_ckpt="c.pt")
    assert torch.equal(student.weight, w)
    load_teacher(student, tmp_path / "teachers.pt", "teacher", role="student")
    assert torch.equal(student.weight, torch.full_like(w, 2.0))
