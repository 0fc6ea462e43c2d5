"""RandViewsd: independent views, reproducible under set_random_state, source untouched."""

from __future__ import annotations

import pytest
import torch
from monai.transforms import Compose, RandAffined, RandGaussianNoised

from s4mi.transforms import RandViewsd


def _views(names: list[str]) -> RandViewsd:
    aug = Compose(
        [
            RandAffined(keys="image", prob=1.0, rotate_range=0.5, padding_mode="zeros"),
            RandGaussianNoised(keys="image", prob=1.0, std=0.1),
        ]
    )
    return RandViewsd(keys="image", names=names, transform=aug)


def test_views_are_independent_and_source_kept() -> None:
    image = torch.rand(1, 16, 16)
    t = _views(["image_q", "image_k0", "image_k1"])
    out = t({"image": image.clone(), "id": 3})
    assert out["id"] == 3 and torch.equal(out["image"], image), "the source image must be left as it was"
    views = [out[k] for k in ("image_q", "image_k0", "image_k1")]
    assert all(v.shape == image.shape for v in views)
    for i in range(3):
        for j in range(i + 1, 3):
            assert not torch.allclose(views[i], views[j]), "views must get their own random draws"


def test_reproducible_with_seed_and_different_across_seeds() -> None:
    image = torch.rand(1, 16, 16)
    a = _views(["q", "k"]).set_random_state(seed=7)({"image": image})
    b = _views(["q", "k"]).set_random_state(seed=7)({"image": image})
    c = _views(["q", "k"]).set_random_state(seed=8)({"image": image})
    assert torch.equal(a["q"], b["q"]) and torch.equal(a["k"], b["k"])
    assert not torch.allclose(a["q"], c["q"])


def test_seeded_through_an_outer_compose() -> None:
    """ResumableLoader seeds the whole pipeline with Compose.set_random_state: the views must follow."""
    image = torch.rand(1, 16, 16)
    outs = [Compose([_views(["q", "k"])]).set_random_state(seed=3)({"image": image}) for _ in range(2)]
    assert torch.equal(outs[0]["q"], outs[1]["q"]) and torch.equal(outs[0]["k"], outs[1]["k"])


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="one key"):
        RandViewsd(keys=["a", "b"], names=["q"], transform=lambda d: d)
    with pytest.raises(ValueError, match="distinct"):
        RandViewsd(keys="image", names=["q", "q"], transform=lambda d: d)
    with pytest.raises(KeyError, match="'image' not found"):
        _views(["q"])({"img": torch.zeros(1, 4, 4)})


def test_unlabelled_transforms_drop_spatial_views_for_rendered_pseudo_labels() -> None:
    from s4mi.transforms.views import unlabelled_transforms

    load, spatial, aug, tensor = ["load"], ["flip", "affine"], ["gamma"], ["to_tensor"]
    assert unlabelled_transforms(load, spatial, aug, tensor, 0) == ["load", "flip", "affine", "gamma", "to_tensor"]
    assert unlabelled_transforms(load, spatial, aug, tensor, 2) == ["load", "gamma", "to_tensor"]
