"""Two segmentation networks trained side by side (cross teaching): one module, one checkpoint, one exported output."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["PAIR_OUTPUTS", "PairView", "SegmentationPair"]

#: what a :class:`SegmentationPair` can output: either network's logits, or the log of their averaged softmax
PAIR_OUTPUTS: tuple[str, ...] = ("cnn", "transformer", "average")


def _output_index(output: str) -> int:
    if output not in PAIR_OUTPUTS:
        raise ValueError(f"output must be one of {PAIR_OUTPUTS}, got {output!r}")
    return PAIR_OUTPUTS.index(output)


class SegmentationPair(nn.Module):
    """A CNN and a Transformer segmenter of the same classes, as one module.

    Training calls ``pair(x, output="both")`` (``(logits_cnn, logits_transformer)``, each ``B C H W[ D]``), so one
    forward goes through ``DistributedDataParallel`` and both networks' gradients are synchronised. Every other call
    returns one ``B C H W[ D]`` map: the CNN's logits, the Transformer's, or ``log(mean(softmax))`` of the two
    (``"average"``, whose softmax is the averaged probabilities), chosen by ``output`` or, by default, by the
    ``output_index`` buffer. That buffer is in the state dict, so a ``model.pt`` written by :meth:`view`'s state dict
    says which output validation chose, and inference (``network_def`` a pair) runs that one.

    TorchScript cannot compile MONAI's 2D SwinUNETR (its patch embedding indexes a 3D shape), so the bundles export
    this module with ``ckpt_export --use_trace True``, which traces the output the loaded ``model.pt`` selects.

    Args:
        cnn: the CNN, e.g. :class:`monai.networks.nets.UNet` (``B C_in H W[ D] -> B C H W[ D]``).
        transformer: the Transformer, e.g. :class:`monai.networks.nets.SwinUNETR` with the same in and out channels.
        output: the default output: ``"cnn"``, ``"transformer"`` or ``"average"``.
    """

    output_index: torch.Tensor

    def __init__(self, cnn: nn.Module, transformer: nn.Module, output: str = "cnn") -> None:
        super().__init__()
        self.cnn = cnn
        self.transformer = transformer
        self.register_buffer("output_index", torch.tensor(_output_index(output)))

    @property
    def output(self) -> str:
        """The default output's name."""
        return PAIR_OUTPUTS[int(self.output_index)]

    def forward(self, x: torch.Tensor, output: str | None = None) -> Any:
        """``(logits_cnn, logits_transformer)`` for ``output="both"``, else the one map ``output`` (default: the
        ``output_index`` buffer) names."""
        if output == "both":
            return self.cnn(x), self.transformer(x)
        which = self.output if output is None else PAIR_OUTPUTS[_output_index(output)]
        if which == "cnn":
            return self.cnn(x)
        if which == "transformer":
            return self.transformer(x)
        probs = (torch.softmax(self.cnn(x).float(), dim=1) + torch.softmax(self.transformer(x).float(), dim=1)) / 2
        return torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))

    def param_groups(self, **options: Any) -> list[dict[str, Any]]:
        """One optimizer parameter group per network (``"cnn"``, ``"transformer"``), each with ``options``.

        SSL4MIS gives each network its own optimizer with the same settings; SGD (momentum, weight decay) and Adam
        update each parameter from its own gradient and state alone, so one optimizer over these two groups takes
        the same steps, and one learning-rate schedule drives both.
        """
        return [
            {"name": name, "params": [p for p in net.parameters() if p.requires_grad], **options}
            for name, net in (("cnn", self.cnn), ("transformer", self.transformer))
        ]

    def view(self, output: str) -> PairView:
        """The pair seen through one output (for an evaluator, or as a role of :class:`s4mi.handlers.BestModelSaver`)."""
        return PairView(self, output)


class PairView(nn.Module):
    """A :class:`SegmentationPair` answering with one output; its state dict is the pair's with that output selected,
    so saving the view exports the whole pair set to run that output."""

    def __init__(self, pair: SegmentationPair, output: str) -> None:
        super().__init__()
        self.pair = pair
        self.output = PAIR_OUTPUTS[_output_index(output)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pair(x, output=self.output)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """The pair's state dict (no ``pair.`` prefix) with ``output_index`` set to this view's output."""
        state = dict(self.pair.state_dict(*args, **kwargs))
        state["output_index"] = torch.tensor(_output_index(self.output))
        return state
