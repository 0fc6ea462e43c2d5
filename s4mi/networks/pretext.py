"""Self-supervised pretext tasks on a shared backbone, and the network a curriculum of them trains.

The curricular pretraining of de Andres Tame et al. (arXiv 2301.10687; curriculum from arXiv 2112.12086) trains
one backbone on a sequence of pretext tasks, each stage starting from the previous stage's weights. Each task here
is a small module holding its own head and computing its own loss from the backbone:

- :class:`RotationTask`: each image turned by ``k * 90`` degrees, ``k`` drawn per image, a 4-way classifier on
  the pooled features names ``k`` (Gidaris et al., ICLR 2018);
- :class:`JigsawTask`: the image cut into ``g x g`` tiles put back in the order of one of a fixed set of
  permutations, a classifier on the pooled features names the permutation (Noroozi and Favaro, ECCV 2016, on the
  whole re-tiled image rather than a siamese network per tile);
- :class:`MaskedReconstructionTask`: regions masked by MONAI's :class:`~monai.transforms.RandCoarseDropout`
  (or shuffled by :class:`~monai.transforms.RandCoarseShuffle`), a light convolutional decoder on the backbone's
  feature map restores the image; the squared error counts masked pixels only (Pathak et al., CVPR 2016);
- :class:`ContrastiveTask`: SimCLR's NT-Xent (MONAI's :class:`~monai.losses.ContrastiveLoss`) between two views of
  each image through a projection head (:class:`s4mi.networks.ProjectionHead`).

MONAI has the dropout and shuffle transforms and the contrastive loss but no rotation, jigsaw or reconstruction
pretext task, so those three (their input and target builders and heads) are written here. Every random draw is
made from torch's global generator on the CPU (the mask transforms are seeded from it per batch), so the
checkpointed random states (:class:`s4mi.handlers.RandomStates`) make a resumed run draw what an uninterrupted one
draws.

The backbone is a MONAI :class:`~monai.networks.nets.DenseNet` (the classifier fine-tuned afterwards);
:class:`CurriculumNetwork` holds it and a head per task, and its backbone's weights go back into that classifier
(:func:`s4mi.networks.backbone_state_dict_for_classifier`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import ContrastiveLoss
from monai.networks.nets import DenseNet
from monai.transforms import RandCoarseDropout, RandCoarseShuffle
from torch import nn

from s4mi.networks.heads import ProjectionHead, densenet_features

__all__ = [
    "PRETEXT_TASKS",
    "ContrastiveTask",
    "CurriculumNetwork",
    "JigsawTask",
    "MaskedReconstructionTask",
    "PretextTask",
    "RotationTask",
    "coarse_mask",
    "curriculum_network",
    "curriculum_views",
    "jigsaw_batch",
    "jigsaw_permutations",
    "masked_mse",
    "rotate_batch",
]


def _draw(high: int, n: int) -> torch.Tensor:
    """``n`` integers uniform in ``[0, high)`` from torch's global CPU generator (checkpointed with the run)."""
    return torch.randint(high, (n,))


# ------------------------------------------------------------------------------------------ rotation
def rotate_batch(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Each image ``x[i]`` (``B C H W``, square) turned by ``k[i] * 90`` degrees counter-clockwise in the image plane
    (``torch.rot90`` over the last two axes), the rotation task's input; ``k`` is its target."""
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotation needs square 2D images B C H W, got shape {tuple(x.shape)}")
    if k.shape != (x.shape[0],):
        raise ValueError(f"one rotation per image: k has shape {tuple(k.shape)} for a batch of {x.shape[0]}")
    out = x.clone()
    for r in range(1, 4):
        sel = (k == r).nonzero().flatten().to(x.device)
        if sel.numel():
            out[sel] = torch.rot90(x[sel], r, dims=(-2, -1))
    return out


# ------------------------------------------------------------------------------------------ jigsaw
def jigsaw_permutations(grid: int, num_permutations: int | None = None, seed: int = 0) -> torch.Tensor:
    """The fixed permutation set of the jigsaw task, ``P x grid**2`` (row ``j`` is what target ``j`` names).

    With ``grid`` 2 (4 tiles) and ``num_permutations`` None or 24 every permutation, in lexicographic order. Else,
    as Noroozi and Favaro choose theirs, permutations far apart in Hamming distance: starting from a random one, add
    the candidate whose minimum distance to the chosen ones is largest, over ``max(1000, 20 P)`` seeded random
    candidates (the identity is never in the set: a puzzle must be shuffled).

    Raises:
        ValueError: ``grid`` < 2, or more permutations asked for than exist (the identity excluded).
    """
    if grid < 2:
        raise ValueError(f"jigsaw grid must be >= 2, got {grid}")
    n = grid * grid
    total = math.factorial(n) - 1
    if num_permutations is None:
        if n > 4:
            raise ValueError(f"a {grid}x{grid} jigsaw needs num_permutations (there are {total})")
        num_permutations = total
    if not 2 <= num_permutations <= total:
        raise ValueError(f"num_permutations must be in [2, {total}] for a {grid}x{grid} jigsaw, got {num_permutations}")
    if n <= 4:
        perms = [p for p in itertools.permutations(range(n)) if list(p) != list(range(n))]
        if num_permutations == len(perms):
            return torch.tensor(perms)
    g = torch.Generator().manual_seed(seed)
    candidates = torch.stack([torch.randperm(n, generator=g) for _ in range(max(1000, 20 * num_permutations))])
    candidates = candidates[(candidates != torch.arange(n)).any(1)]
    candidates = torch.unique(candidates, dim=0)
    chosen = [int(torch.randint(len(candidates), (1,), generator=g))]
    min_dist = (candidates != candidates[chosen[0]]).sum(1)
    for _ in range(num_permutations - 1):
        nxt = int(torch.argmax(min_dist))
        chosen.append(nxt)
        min_dist = torch.minimum(min_dist, (candidates != candidates[nxt]).sum(1))
    return candidates[chosen]


def jigsaw_batch(x: torch.Tensor, permutations: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Each image ``x[i]`` (``B C H W``) re-tiled: tile position ``p`` (row-major over a ``g x g`` grid) of the output
    holds the input's tile ``permutations[index[i], p]``.

    Raises:
        ValueError: the image sides are not divisible by ``g``, or ``index`` is not one entry per image.
    """
    n = permutations.shape[1]
    g = math.isqrt(n)
    h, w = x.shape[-2:]
    if x.ndim != 4 or h % g or w % g:
        raise ValueError(f"a {g}x{g} jigsaw needs B C H W images with sides divisible by {g}, got {tuple(x.shape)}")
    if index.shape != (x.shape[0],):
        raise ValueError(f"one permutation per image: index has shape {tuple(index.shape)} for a batch of {x.shape[0]}")
    b, c = x.shape[:2]
    th, tw = h // g, w // g
    tiles = x.reshape(b, c, g, th, g, tw).permute(0, 2, 4, 1, 3, 5).reshape(b, n, c, th, tw)
    order = permutations.to(x.device)[index.to(x.device)]  # B x n: source tile of each position
    tiles = torch.gather(tiles, 1, order[:, :, None, None, None].expand_as(tiles))
    return tiles.reshape(b, g, g, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


# ------------------------------------------------------------------------------------------ masked reconstruction
def coarse_mask(
    x: torch.Tensor, dropout: RandCoarseDropout, shuffle: RandCoarseShuffle | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The masked input and the mask (``B 1 H W``, 1 where masked) of each image of ``x`` (``B C H W``).

    The holes are MONAI's: ``dropout`` (a :class:`~monai.transforms.RandCoarseDropout` with ``prob`` 1) run on an
    image of ones marks them (its ``fill_value`` must be 0), seeded per image from torch's global generator; the
    input is ``x`` with the holes filled with 0 or, with ``shuffle`` (a :class:`~monai.transforms.RandCoarseShuffle`
    of the same hole sizes), with the hole's own pixels shuffled: seeded alike, it draws the same holes.
    """
    masks, inputs = [], []
    for img in x:
        seed = int(_draw(2**31 - 1, 1))
        dropout.set_random_state(seed)
        keep = dropout(torch.ones_like(img[:1]), randomize=True)
        mask = 1.0 - torch.as_tensor(keep, dtype=x.dtype, device=x.device)
        if shuffle is not None:
            shuffle.set_random_state(seed)
            inputs.append(torch.as_tensor(shuffle(img, randomize=True), dtype=x.dtype, device=x.device))
        else:
            inputs.append(img * (1.0 - mask))
        masks.append(mask)
    return torch.stack(inputs), torch.stack(masks)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the masked pixels only: ``sum(mask * (pred - target)^2) / (C * sum(mask))``, the mask
    ``B 1 H W`` broadcast over the ``C`` channels; 0 (with a gradient) when nothing is masked."""
    sq = (pred - target).pow(2) * mask
    return sq.sum() / (mask.sum() * pred.shape[1]).clamp_min(1.0)


# ------------------------------------------------------------------------------------------ the tasks
class PretextTask(nn.Module):
    """A pretext task: its head(s) and its loss from a backbone.

    :meth:`forward` takes the backbone (a :class:`CurriculumNetwork`, for its ``pooled`` and ``feature_map``) and
    one or two views of each image, and returns ``{"loss": ..., ...}`` (extras for logging, e.g. an accuracy).
    ``views`` says how many views it reads.
    """

    name: str = ""
    views: int = 1

    def forward(
        self, net: CurriculumNetwork, x_1: torch.Tensor, x_2: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def _accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (logits.detach().argmax(1) == target).float().mean()


class RotationTask(PretextTask):
    """Rotation prediction: one rotation ``k`` in {0, 90, 180, 270} degrees per image, cross-entropy of a linear head
    on the pooled features (4 classes)."""

    name = "rotation"

    def __init__(self, in_features: int = 1024) -> None:
        super().__init__()
        self.head = nn.Linear(in_features, 4)

    def forward(
        self, net: CurriculumNetwork, x_1: torch.Tensor, x_2: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        k = _draw(4, x_1.shape[0]).to(x_1.device)
        logits = self.head(net.pooled(rotate_batch(x_1, k)))
        return {"loss": F.cross_entropy(logits.float(), k), "acc": _accuracy(logits, k)}


class JigsawTask(PretextTask):
    """Jigsaw (patch order) prediction: the image re-tiled by one permutation of a fixed set
    (:func:`jigsaw_permutations`), cross-entropy of a linear head on the pooled features naming it.

    Args:
        in_features: pooled feature size.
        grid: tiles per side (2: all 23 shuffled orders of 4 tiles; 3: ``num_permutations`` of 9 tiles).
        num_permutations: size of the permutation set (None: all, for a 2x2 grid).
        seed: seed of the permutation set (a property of the task, saved with it as a buffer).
    """

    name = "jigsaw"

    def __init__(
        self, in_features: int = 1024, grid: int = 2, num_permutations: int | None = None, seed: int = 0
    ) -> None:
        super().__init__()
        self.register_buffer("permutations", jigsaw_permutations(grid, num_permutations, seed))
        self.head = nn.Linear(in_features, len(self.permutations))

    def forward(
        self, net: CurriculumNetwork, x_1: torch.Tensor, x_2: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        index = _draw(len(self.permutations), x_1.shape[0]).to(x_1.device)
        logits = self.head(net.pooled(jigsaw_batch(x_1, self.permutations, index)))
        return {"loss": F.cross_entropy(logits.float(), index), "acc": _accuracy(logits, index)}


class MaskedReconstructionTask(PretextTask):
    """Masked-region reconstruction: holes cut by MONAI's coarse dropout (or shuffle), the image restored by a
    decoder on the backbone's last feature map, squared error on the masked pixels only (:func:`masked_mse`).

    The decoder is light on purpose (the backbone should learn the context, not the decoder): a 1x1 convolution to
    ``width`` channels, then upsampling by 2 with a 3x3 convolution and ReLU until the input size, then a 1x1
    convolution to the image channels.

    Args:
        in_features: channels of the backbone's feature map (1024 for DenseNet-121).
        out_channels: image channels.
        stride: the feature map's stride (32 for a MONAI DenseNet).
        width: decoder channels.
        holes, max_holes, hole_size, max_hole_size: :class:`~monai.transforms.RandCoarseDropout`'s ``holes``,
            ``max_holes``, ``spatial_size`` and ``max_spatial_size`` (pixels).
        fill: ``"zero"`` (holes set to 0) or ``"shuffle"`` (their pixels shuffled, RandCoarseShuffle).
    """

    name = "reconstruction"

    def __init__(
        self,
        in_features: int = 1024,
        out_channels: int = 1,
        stride: int = 32,
        width: int = 64,
        holes: int = 4,
        max_holes: int | None = 8,
        hole_size: int = 8,
        max_hole_size: int | None = 16,
        fill: str = "zero",
    ) -> None:
        super().__init__()
        if fill not in ("zero", "shuffle"):
            raise ValueError(f"fill must be 'zero' or 'shuffle', got {fill!r}")
        if stride < 1 or stride & (stride - 1):
            raise ValueError(f"the feature map's stride must be a power of 2, got {stride}")
        layers: list[nn.Module] = [nn.Conv2d(in_features, width, 1), nn.ReLU(inplace=True)]
        for _ in range(int(math.log2(stride))):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(width, width, 3, padding=1),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(width, out_channels, 1))
        self.decoder = nn.Sequential(*layers)
        sizes = dict(holes=holes, max_holes=max_holes, spatial_size=hole_size, max_spatial_size=max_hole_size, prob=1.0)
        self.dropout = RandCoarseDropout(fill_value=0.0, **sizes)
        self.shuffle = RandCoarseShuffle(**sizes) if fill == "shuffle" else None

    def forward(
        self, net: CurriculumNetwork, x_1: torch.Tensor, x_2: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        inputs, mask = coarse_mask(x_1.detach(), self.dropout, self.shuffle)
        pred = self.decoder(net.feature_map(inputs))
        if pred.shape[-2:] != x_1.shape[-2:]:
            pred = F.interpolate(pred, size=x_1.shape[-2:], mode="bilinear", align_corners=False)
        return {"loss": masked_mse(pred.float(), x_1.float(), mask.float()), "masked_share": mask.mean()}


class ContrastiveTask(PretextTask):
    """SimCLR's NT-Xent between two views of each image (MONAI's :class:`~monai.losses.ContrastiveLoss`, in-batch
    negatives) through a projection head on the pooled features, both views in one forward.

    Args:
        in_features: pooled feature size.
        hidden_features, out_features: the projection head's sizes.
        temperature: NT-Xent's temperature.
    """

    name = "contrastive"
    views = 2

    def __init__(
        self, in_features: int = 1024, hidden_features: int = 512, out_features: int = 128, temperature: float = 0.5
    ) -> None:
        super().__init__()
        self.head = ProjectionHead(in_features, hidden_features, out_features, norm="batch")
        self.loss = ContrastiveLoss(temperature=temperature)

    def forward(
        self, net: CurriculumNetwork, x_1: torch.Tensor, x_2: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        if x_2 is None:
            raise ValueError("the contrastive task needs two views of each image")
        z = F.normalize(self.head(net.pooled(torch.cat([x_1, x_2]))), dim=1)
        z_1, z_2 = z.float().chunk(2)
        return {"loss": self.loss(z_1, z_2)}


PRETEXT_TASKS: dict[str, type[PretextTask]] = {
    t.name: t for t in (RotationTask, JigsawTask, MaskedReconstructionTask, ContrastiveTask)
}
"""The pretext tasks by the name a curriculum gives them."""


class CurriculumNetwork(nn.Module):
    """A MONAI DenseNet backbone with one pretext task (and its head) per name, trained one task at a time.

    ``backbone`` is :func:`s4mi.networks.densenet_features` of the DenseNet (its modules, its names, without the
    classifier), so :func:`s4mi.networks.backbone_state_dict_for_classifier` gives weights that load into the
    DenseNet classifier fine-tuned afterwards, and the probes read its pooled features.

    Args:
        backbone: a MONAI :class:`~monai.networks.nets.DenseNet` (its classifier is dropped).
        tasks: name -> :class:`PretextTask`, or name -> keyword arguments for the task of that name in
            :data:`PRETEXT_TASKS` (``in_features`` and, for reconstruction, ``out_channels`` and ``stride`` filled in
            from the DenseNet).

    Raises:
        TypeError: the backbone is not a MONAI DenseNet.
        ValueError: a task name is unknown.
    """

    def __init__(self, backbone: DenseNet, tasks: Mapping[str, PretextTask | Mapping[str, Any] | None]) -> None:
        super().__init__()
        if not isinstance(backbone, DenseNet):
            raise TypeError(f"the curriculum's backbone must be a MONAI DenseNet, got {type(backbone).__name__}")
        in_features = backbone.class_layers.out.in_features
        in_channels = next(backbone.features.parameters()).shape[1]
        self.backbone = densenet_features(backbone)
        built: dict[str, PretextTask] = {}
        for name, task in tasks.items():
            if isinstance(task, PretextTask):
                built[name] = task
                continue
            if name not in PRETEXT_TASKS:
                raise ValueError(f"unknown pretext task {name!r}; known: {sorted(PRETEXT_TASKS)}")
            kwargs = {"in_features": in_features, **dict(task or {})}
            if name == "reconstruction":
                kwargs.setdefault("out_channels", in_channels)
                # the stem and its pooling halve twice, each transition once more
                transitions = sum(1 for n, _ in backbone.features.named_children() if n.startswith("transition"))
                kwargs.setdefault("stride", 4 * 2**transitions)
            built[name] = PRETEXT_TASKS[name](**kwargs)
        self.tasks = nn.ModuleDict(built)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's last feature map after its activation, ``B F h w`` (stride 32)."""
        return self.backbone.class_layers.relu(self.backbone.features(x))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled backbone features ``B F``, what the fine-tuned classifier's Linear reads."""
        return self.backbone(x)

    def forward(self, task: str, x_1: torch.Tensor, x_2: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Task ``task``'s loss (and extras) on the views."""
        if task not in self.tasks:
            raise KeyError(f"this network has no pretext task {task!r} (has {sorted(self.tasks)})")
        return self.tasks[task](self, x_1, x_2)


def curriculum_network(
    backbone: DenseNet, curriculum: Any, settings: Mapping[str, Mapping[str, Any] | None] | None = None
) -> CurriculumNetwork:
    """A :class:`CurriculumNetwork` with the tasks a curriculum names (each once), configured by ``settings``
    (task name -> keyword arguments; tasks not named there take their defaults).

    Raises:
        ValueError: the curriculum is malformed or names an unknown task.
    """
    from s4mi.engines.curriculum import parse_curriculum

    settings = settings or {}
    names = list(dict.fromkeys(task for task, _ in parse_curriculum(curriculum)))
    return CurriculumNetwork(backbone, {name: settings.get(name) for name in names})


def curriculum_views(curriculum: Any) -> list[str]:
    """The view keys a curriculum's pretraining data must give: ``image_v0``, and ``image_v1`` when a task of it
    contrasts two views."""
    from s4mi.engines.curriculum import parse_curriculum

    two = any(PRETEXT_TASKS[t].views == 2 for t, _ in parse_curriculum(curriculum) if t in PRETEXT_TASKS)
    return ["image_v0", "image_v1"] if two else ["image_v0"]
