"""Cross teaching between a CNN and a Transformer (Luo et al., MIDL 2022), the S4MI benchmark's semi-supervised
segmentation (Singh et al., arXiv 2311.10319): two networks, each taught by the labels and by the other's argmax."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from monai.engines.utils import IterationEvents

from s4mi.engines.base import untrained_parameters
from s4mi.engines.semi_supervised import SemiSupervisedTrainer
from s4mi.keys import Keys
from s4mi.losses.cross_teaching import CrossTeachingLoss, cross_pseudo_label

__all__ = ["OPTIMIZER_RECIPES", "CrossTeachingTrainer", "cross_teaching_lr_scheduler", "cross_teaching_optimizer"]

#: the optimiser recipes: SSL4MIS's code and the S4MI paper's
OPTIMIZER_RECIPES: tuple[str, ...] = ("ssl4mis", "s4mi")


def _check_recipe(recipe: str) -> str:
    if recipe not in OPTIMIZER_RECIPES:
        raise ValueError(f"optimizer recipe must be one of {OPTIMIZER_RECIPES}, got {recipe!r}")
    return recipe


def cross_teaching_optimizer(
    params: Iterable[Any], recipe: str = "s4mi", lr: float | None = None, weight_decay: float | None = None
) -> torch.optim.Optimizer:
    """The optimiser of a cross-teaching recipe, over both networks' parameters (one group each).

    - ``"ssl4mis"`` (``train_cross_teaching_between_cnn_transformer_2D.py``): SGD, lr 0.01, momentum 0.9, weight
      decay 1e-4, with :func:`cross_teaching_lr_scheduler`'s poly decay;
    - ``"s4mi"`` (the S4MI paper): Adam, lr 3.6e-4, no weight decay, constant learning rate.

    Args:
        params: parameters or groups (:meth:`s4mi.networks.SegmentationPair.param_groups`).
        recipe: ``"ssl4mis"`` or ``"s4mi"``.
        lr: replaces the recipe's learning rate (None keeps it).
        weight_decay: replaces the recipe's weight decay (None keeps it).

    Raises:
        ValueError: an unknown recipe.
    """
    if _check_recipe(recipe) == "ssl4mis":
        return torch.optim.SGD(
            params,
            lr=0.01 if lr is None else lr,
            momentum=0.9,
            weight_decay=1e-4 if weight_decay is None else weight_decay,
        )
    return torch.optim.Adam(
        params, lr=3.6e-4 if lr is None else lr, weight_decay=0.0 if weight_decay is None else weight_decay
    )


def cross_teaching_lr_scheduler(
    optimizer: torch.optim.Optimizer, recipe: str = "s4mi", total_iterations: int = 1
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule of a recipe, stepped every iteration: ``"ssl4mis"``'s poly decay
    ``lr_0 (1 - t / T)^0.9`` (:class:`torch.optim.lr_scheduler.PolynomialLR`), ``"s4mi"``'s constant rate.

    Raises:
        ValueError: an unknown recipe, or ``total_iterations`` < 1.
    """
    if total_iterations < 1:
        raise ValueError(f"total_iterations must be >= 1, got {total_iterations}")
    if _check_recipe(recipe) == "ssl4mis":
        return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=total_iterations, power=0.9)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


class CrossTeachingTrainer(SemiSupervisedTrainer):
    """Cross teaching between a CNN and a Transformer, 2D or 3D.

    Per iteration (SSL4MIS ``train_cross_teaching_between_cnn_transformer_2D.py``; Luo et al. 2022, eq. 1-3):

    1. ``x = cat(x_lb, x_ulb)``: the labelled batch and the unlabelled one (the same weakly augmented images for both
       networks, no strong view);
    2. ``logits_cnn, logits_transformer = network(x, output="both")``, each split into its labelled and unlabelled
       part (one forward per network over both batches, so batch norm sees them together, as in the reference);
    3. ``pseudo_label_cnn = argmax(logits_ulb_cnn)``, ``pseudo_label_transformer = argmax(logits_ulb_transformer)``,
       detached (:func:`s4mi.losses.cross_pseudo_label`);
    4. ``loss_sup = sum over the networks of 0.5 (CE_w + Dice)`` on the labelled batch;
       ``loss_unsup = Dice(softmax(logits_ulb_cnn), pseudo_label_transformer) + Dice(softmax(logits_ulb_transformer),
       pseudo_label_cnn)``;
    5. ``loss = loss_sup + lambda(t) loss_unsup`` (``= model1_loss + model2_loss``), ``lambda(t) = 0.1 exp(-5 (1 -
       t/L)^2)`` by iteration (``unsup_weight``); one backward and one optimizer step for both networks.

    One optimizer, with a parameter group per network (:meth:`s4mi.networks.SegmentationPair.param_groups`): SSL4MIS
    builds one SGD per network with the same settings and schedule, and an SGD or Adam step is per parameter, so one
    optimizer over both groups takes the same steps; the engine's checkpoint then holds one optimizer state.

    Args:
        network: a :class:`s4mi.networks.SegmentationPair` (or a module whose ``forward(x, output="both")`` returns
            both networks' logits), possibly in ``DistributedDataParallel``.
        optimizer: must hold every trainable parameter of both networks.
        loss_function: a :class:`s4mi.losses.CrossTeachingLoss` (default: unweighted); its class weights are moved to
            the device.
        args, kwargs: those of :class:`s4mi.engines.SemiSupervisedTrainer` (``unsup_weight`` the ramp above,
            ``teachers`` none).

    Raises:
        ValueError: the optimizer leaves out a trainable parameter (named).
    """

    needs_strong_view = False

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Any,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: CrossTeachingLoss | None = None,
        **kwargs: Any,
    ) -> None:
        untrained = untrained_parameters(network, optimizer)
        if untrained:
            raise ValueError(
                f"the optimizer leaves out {len(untrained)} trainable parameter(s) of the network, e.g. {untrained[:3]}:"
                " cross teaching trains both networks (use SegmentationPair.param_groups())"
            )
        loss = (CrossTeachingLoss() if loss_function is None else loss_function).to(device)
        super().__init__(device, max_epochs, train_data_loader, network, optimizer, loss, **kwargs)

    def train_step(self, engine: CrossTeachingTrainer, batch: dict[str, torch.Tensor]) -> None:
        x_lb, y_lb, x_ulb = batch[Keys.X_LB], batch[Keys.Y_LB], batch[Keys.X_ULB_W]
        n_lb = x_lb.shape[0]
        logits_cnn, logits_tr = engine.inferer(torch.cat([x_lb, x_ulb]), engine.network, output="both")
        lb_cnn, ulb_cnn = logits_cnn.float().split([n_lb, x_ulb.shape[0]])
        lb_tr, ulb_tr = logits_tr.float().split([n_lb, x_ulb.shape[0]])
        out = engine.state.output
        out.update(
            {
                Keys.PRED: lb_cnn,
                Keys.LOGITS_LB: lb_cnn,
                Keys.LOGITS_LB_CNN: lb_cnn,
                Keys.LOGITS_LB_TRANSFORMER: lb_tr,
                Keys.LOGITS_ULB_CNN: ulb_cnn,
                Keys.LOGITS_ULB_TRANSFORMER: ulb_tr,
                Keys.PSEUDO_LABEL_CNN: cross_pseudo_label(ulb_cnn),
                Keys.PSEUDO_LABEL_TRANSFORMER: cross_pseudo_label(ulb_tr),
            }
        )
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        loss_fn: CrossTeachingLoss = engine.loss_function  # type: ignore[assignment]
        sup_cnn, sup_tr = loss_fn.supervised(lb_cnn, y_lb), loss_fn.supervised(lb_tr, y_lb)
        unsup_cnn, unsup_tr = loss_fn.cross(ulb_cnn, ulb_tr), loss_fn.cross(ulb_tr, ulb_cnn)
        out.update(
            {
                Keys.LOSS_SUP_CNN: sup_cnn.detach(),
                Keys.LOSS_SUP_TRANSFORMER: sup_tr.detach(),
                Keys.LOSS_UNSUP_CNN: unsup_cnn.detach(),
                Keys.LOSS_UNSUP_TRANSFORMER: unsup_tr.detach(),
            }
        )
        engine.set_losses(sup_cnn + sup_tr, unsup_cnn + unsup_tr)
