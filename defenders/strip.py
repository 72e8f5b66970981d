from __future__ import annotations

import torch
from torch import nn

from arena.params import Float, Int, Space
from arena.protocol import DefenseOutcome, InputFilter
from arena.registry import register_defender
from arena.strategy import Defender, DefenseContext
from arena.training import logits


class StripFilter(InputFilter):
    """Rejects inputs whose predictions stay confident when blended with clean images."""

    def __init__(self, overlays: torch.Tensor, n: int, threshold: float, seed: int) -> None:
        self.overlays = overlays  # clean images from the defender's split
        self.n = n
        self.threshold = threshold
        self.seed = seed

    def entropy(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Mean prediction entropy of each input superimposed with `n` random clean images."""
        # a fixed draw per call: the same inputs always get the same verdict
        g = torch.Generator().manual_seed(self.seed)
        pick = torch.randint(0, len(self.overlays), (self.n,), generator=g)
        total = torch.zeros(len(x), device=x.device)
        for i in pick.tolist():
            blended = (x + self.overlays[i]).clamp(0, 1)  # superimposition as in the paper (additive blend, clipped)
            p = torch.softmax(logits(model, blended), dim=1)
            total += -(p * torch.log2(p.clamp(min=1e-12))).sum(dim=1)
        return total / self.n

    def accept(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return self.entropy(model, x) >= self.threshold


@register_defender
class Strip(Defender):
    """STRIP: reject inputs whose prediction survives strong perturbation (low entropy under blending).

    Paper: Gao et al., "STRIP: A Defence Against Trojan Attacks on Deep Neural Networks"
    (ACSAC 2019). Each input is superimposed with N clean images; a trojaned input keeps
    its target prediction, so the mean entropy of the N predictions is low. The threshold is the
    `frr` quantile of the entropies of clean inputs (the defender's split), so about `frr` of
    clean inputs are rejected. Deviations: N = 20 by default (the paper uses 100) to keep
    evaluation affordable on CPU; the clean inputs used for calibration are blended with other
    images of the same split.
    Attacks on its assumption (that a trigger overrides whatever it is blended with):
    `strip_evading`, trained to lose confidence under superimposition; `tact`, whose trigger
    works only on source classes; `all_to_all`, whose triggered inputs do not share one label.
    """

    name = "strip"
    version = "2"  # 2: the harness seeds defenses from what they hold (issue #17)
    paper = "Gao et al. STRIP: A Defence Against Trojan Attacks on Deep Neural Networks (ACSAC 2019)"
    deviations = "N = 20 superimpositions (paper: 100)"
    min_clean = 20
    space = Space(
        n_superimpose=Int(20, 1, 1000, help="clean images blended with each input", search=(5, 50)),
        frr=Float(0.01, 0.0, 0.5, low_open=True, help="false rejection rate the threshold is calibrated to", search=(0.005, 0.1)),
    )

    def run(self, model: nn.Module, ctx: DefenseContext) -> DefenseOutcome:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.generator))
        probe = StripFilter(ctx.clean.x, self.params["n_superimpose"], 0.0, seed)
        clean_entropy = probe.entropy(model, ctx.clean.x)
        threshold = float(torch.quantile(clean_entropy, self.params["frr"]))
        return DefenseOutcome(input_filter=StripFilter(ctx.clean.x, self.params["n_superimpose"], threshold, seed))
