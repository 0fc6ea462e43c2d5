from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from s4mi.bundle import BundleConfigError, locate_bundle_root, require_first_stage


def test_require_first_stage(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "pretrained.pt"
    with pytest.raises(BundleConfigError, match=r"pretrained_ckpt = '.*pretrained.pt' does not exist\. Run configs"):
        require_first_stage(missing, "", "s2mts2_cxr_classification")
    assert require_first_stage(missing, resume_ckpt=tmp_path / "resume" / "c.pt") is None  # resumes: not needed
    assert require_first_stage("", "") is None  # from scratch on purpose
    missing.parent.mkdir()
    torch.save({}, missing)
    assert require_first_stage(missing) == missing


@pytest.mark.parametrize("name", ["s2mts2_cxr_classification", "online_pseudolabel_polyp_segmentation"])
def test_train_json_alone_ends_with_s4mi_message(tmp_path: Path, name: str) -> None:
    """Before, the last stderr line was MONAI's "RuntimeError: Failed to evaluate ConfigExpression" (or its
    expression), with s4mi's FileNotFoundError somewhere above it."""
    configs = Path(locate_bundle_root(name)) / "configs"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(configs / "train.json"),
           "--meta_file", str(configs / "metadata.json"), "--logging_file", str(configs / "logging.conf"),
           "--phantom_n", "40", "--output_dir", str(tmp_path), "--ckpt_dir", str(tmp_path / "models")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"s4mi: configs/train.json of {name} starts from its first stage's weights"), last
    assert "Run configs/pretrain.json first" in last and f"`s4mi run {name}`" in last
