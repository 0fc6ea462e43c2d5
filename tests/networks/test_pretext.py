"""Pretext tasks of curricular pretraining: their inputs and targets against naive references written here."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from monai.networks.nets import DenseNet121
from monai.transforms import RandCoarseDropout, RandCoarseShuffle

from s4mi.networks import backbone_state_dict_for_classifier, curriculum_network, curriculum_views
from s4mi.networks.pretext import (
    CurriculumNetwork,
    coarse_mask,
    jigsaw_batch,
    jigsaw_permutations,
    masked_mse,
    rotate_batch,
)


def _rot90_naive(img: np.ndarray, k: int) -> np.ndarray:
    """Counter-clockwise quarter turns of a C H W image, one pixel at a time: out[y, x] = in[x, W-1-y] per turn."""
    out = img.copy()
    for _ in range(k):
        c, h, w = out.shape
        turned = np.empty((c, w, h), dtype=out.dtype)
        for y in range(w):
            for x in range(h):
                turned[:, y, x] = out[:, x, w - 1 - y]
        out = turned
    return out


def test_rotation_inputs_match_their_labels() -> None:
    x = torch.rand(6, 2, 5, 5)
    k = torch.tensor([0, 1, 2, 3, 1, 0])
    out = rotate_batch(x, k)
    for i in range(6):
        np.testing.assert_array_equal(out[i].numpy(), _rot90_naive(x[i].numpy(), int(k[i])))
    # a quarter turn moves the top-left pixel to the bottom-left (counter-clockwise)
    assert out[1, 0, -1, 0] == x[1, 0, 0, 0]


def test_rotation_refuses_non_square_images() -> None:
    with pytest.raises(ValueError, match="square"):
        rotate_batch(torch.rand(2, 1, 4, 6), torch.tensor([0, 1]))


def _tile(img: np.ndarray, g: int, p: int) -> np.ndarray:
    c, h, w = img.shape
    th, tw = h // g, w // g
    r, q = divmod(p, g)
    return img[:, r * th : (r + 1) * th, q * tw : (q + 1) * tw]


@pytest.mark.parametrize("grid", [2, 3])
def test_jigsaw_puts_the_tile_the_permutation_names_at_each_position(grid: int) -> None:
    perms = jigsaw_permutations(grid, None if grid == 2 else 10, seed=1)
    x = torch.rand(5, 3, 6 * grid, 4 * grid)
    index = torch.tensor([0, 3, len(perms) - 1, 1, 2])
    out = jigsaw_batch(x, perms, index).numpy()
    for i in range(5):
        for p in range(grid * grid):
            src = int(perms[index[i], p])
            np.testing.assert_array_equal(_tile(out[i], grid, p), _tile(x[i].numpy(), grid, src))


def test_jigsaw_permutation_sets() -> None:
    perms = jigsaw_permutations(2)
    # every shuffled order of 4 tiles, in lexicographic order, the identity left out
    expected = [p for p in itertools.permutations(range(4)) if p != (0, 1, 2, 3)]
    assert perms.tolist() == [list(p) for p in expected]
    nine = jigsaw_permutations(3, 30, seed=0)
    assert nine.shape == (30, 9) and len({tuple(p) for p in nine.tolist()}) == 30
    assert all(sorted(p) == list(range(9)) and p != list(range(9)) for p in nine.tolist())
    # chosen for their Hamming distance: far further apart than random permutations of 9 are on average (8 - 1)
    d = (nine[:, None] != nine[None]).sum(-1).float()
    assert d[~torch.eye(30, dtype=torch.bool)].min() >= 6
    assert torch.equal(nine, jigsaw_permutations(3, 30, seed=0)), "the set is a function of its seed"
    with pytest.raises(ValueError, match="num_permutations"):
        jigsaw_permutations(3)
    with pytest.raises(ValueError, match="divisible"):
        jigsaw_batch(torch.rand(1, 1, 5, 4), perms, torch.tensor([0]))


def test_masked_mse_counts_masked_pixels_only() -> None:
    pred, target = torch.rand(3, 2, 4, 4), torch.rand(3, 2, 4, 4)
    mask = (torch.rand(3, 1, 4, 4) > 0.6).float()
    total, count = 0.0, 0
    for b, c, y, x in itertools.product(range(3), range(2), range(4), range(4)):
        if mask[b, 0, y, x]:
            total += float(pred[b, c, y, x] - target[b, c, y, x]) ** 2
            count += 1
    assert masked_mse(pred, target, mask).item() == pytest.approx(total / count, rel=1e-6)
    # pixels outside the mask do not matter, however wrong
    worse = pred + 10.0 * (1 - mask)
    assert masked_mse(worse, target, mask).item() == pytest.approx(total / count, rel=1e-6)
    assert masked_mse(pred, target, torch.zeros_like(mask)).item() == 0.0


def test_coarse_mask_holes_are_monais_and_the_input_keeps_the_rest() -> None:
    dropout = RandCoarseDropout(holes=2, spatial_size=3, max_holes=3, max_spatial_size=5, fill_value=0.0, prob=1.0)
    x = torch.rand(4, 2, 16, 16) + 0.5  # no pixel is 0 before masking
    torch.manual_seed(0)
    inputs, mask = coarse_mask(x, dropout)
    assert mask.shape == (4, 1, 16, 16) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(inputs * (1 - mask), x * (1 - mask)), "pixels outside the holes changed"
    assert torch.all(inputs[mask.expand_as(inputs).bool()] == 0)
    # the same draw as MONAI's dropout on the image itself, seeded as coarse_mask seeds it
    torch.manual_seed(0)
    for i in range(4):
        seed = int(torch.randint(2**31 - 1, (1,)))
        dropout.set_random_state(seed)
        np.testing.assert_array_equal(np.asarray(dropout(x[i], randomize=True)), inputs[i].numpy())
    # shuffled holes: the same holes, their own pixels moved around, the rest untouched
    torch.manual_seed(0)
    shuffle = RandCoarseShuffle(holes=2, spatial_size=3, max_holes=3, max_spatial_size=5, prob=1.0)
    shuffled, mask_s = coarse_mask(x, dropout, shuffle)
    assert torch.equal(mask_s, mask)
    assert torch.equal(shuffled * (1 - mask), x * (1 - mask))
    for i in range(4):
        inside = mask[i, 0].bool()
        for c in range(2):
            assert torch.equal(shuffled[i, c][inside].sort().values, x[i, c][inside].sort().values)


def _network(*tasks: str) -> CurriculumNetwork:
    return curriculum_network(DenseNet121(spatial_dims=2, in_channels=1, out_channels=3), [[t, 1] for t in tasks])


def test_every_task_gives_a_finite_loss_and_trains_only_its_head_and_the_backbone() -> None:
    torch.manual_seed(0)
    net = _network("rotation", "jigsaw", "reconstruction", "contrastive")
    x_1, x_2 = torch.rand(4, 1, 32, 32), torch.rand(4, 1, 32, 32)
    for task in net.tasks:
        net.zero_grad(set_to_none=True)
        out = net(task, x_1, x_2)
        assert torch.isfinite(out["loss"]) and out["loss"] > 0, task
        out["loss"].backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.backbone.parameters()), task
        for other, module in net.tasks.items():
            grads = [p.grad for p in module.parameters()]
            if other == task:
                assert all(g is not None for g in grads), task
            else:
                assert all(g is None for g in grads), f"{task} gave {other}'s head a gradient"


def test_the_backbone_goes_back_into_the_classifier() -> None:
    dense = DenseNet121(spatial_dims=2, in_channels=1, out_channels=6)
    net = curriculum_network(dense, "rotation:1+contrastive:1")
    state = backbone_state_dict_for_classifier(net)
    assert not any(k.startswith(("tasks.", "class_layers.out")) for k in state)
    fresh = DenseNet121(spatial_dims=2, in_channels=1, out_channels=6)
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    assert sorted(missing) == ["class_layers.out.bias", "class_layers.out.weight"] and not unexpected
    assert curriculum_views("rotation:1+contrastive:1") == ["image_v0", "image_v1"]
    assert curriculum_views([["jigsaw", 2]]) == ["image_v0"]


def test_unknown_task_and_backbone_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown pretext task 'colourise'"):
        _network("colourise")
    with pytest.raises(TypeError, match="DenseNet"):
        CurriculumNetwork(torch.nn.Linear(2, 2), {"rotation": None})  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="no pretext task 'jigsaw'"):
        _network("rotation")("jigsaw", torch.rand(2, 1, 32, 32))
