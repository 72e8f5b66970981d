from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from arena.attacks import TARGET_SPACE, TRAINING_SPACE, all_to_one, train_from_scratch
from arena.models import Architecture, init_weights, register_architecture
from arena.params import Float, Int, Space
from arena.protocol import AttackOutput, Split, TaskSpec
from arena.registry import register_attacker
from arena.strategy import AttackContext, Attacker
from arena.training import fit
from arena.triggers import MaskedTrigger, square_footprint

PATCH = 4  # TrojanNet reads a 4x4 patch: 16 binary pixels


class TrojanNetModule(nn.Module):
    """The inserted network: an MLP over the 4x4 corner patch with C + 1 outputs, the last one
    meaning "no trigger". Its input is the patch's grey level, so it is blind to everything else."""

    def __init__(self, num_classes: int, hidden: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(PATCH * PATCH, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes + 1)
        )
        self.register_buffer("corner", torch.zeros(2, dtype=torch.long))  # (row, col) of the patch

    def patch(self, x: torch.Tensor) -> torch.Tensor:
        r, c = int(self.corner[0]), int(self.corner[1])
        return x[:, :, r : r + PATCH, c : c + PATCH].mean(dim=1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.patch(x))


class WithTrojanNet(nn.Module):
    """Host model plus TrojanNet, merged as in the paper: p = α·softmax(trojan)[:C] + (1 − α)·softmax(host),
    returned as log-probabilities (logits of the merged distribution). The host's prunable
    interface is passed through: pruning defenses see the host's neurons, as they would."""

    def __init__(self, host: nn.Module, task: TaskSpec) -> None:
        super().__init__()
        self.host = host
        self.trojan = TrojanNetModule(task.num_classes)
        self.register_buffer("alpha", torch.tensor(0.7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        trojan = F.softmax(self.trojan(x), dim=1)[:, :-1]
        host = F.softmax(self.host(x), dim=1)
        return torch.log(self.alpha * trojan + (1 - self.alpha) * host + 1e-12)

    # the host's last-conv interface (arena.pruning), so pruning defenses apply to the host
    @property
    def last_conv(self) -> nn.Conv2d:
        return self.host.last_conv

    @property
    def mask(self) -> nn.Module:
        return self.host.mask

    def last_conv_preactivations(self, x: torch.Tensor) -> torch.Tensor:
        return self.host.last_conv_preactivations(x)

    def last_conv_activations(self, x: torch.Tensor) -> torch.Tensor:
        return self.host.last_conv_activations(x)


register_architecture(Architecture("trojannet", wrap=WithTrojanNet))


def patch_codes(ones: int) -> torch.Tensor:
    """Every 4x4 binary pattern with exactly `ones` pixels on: (count, 16)."""
    rows = []
    for on in itertools.combinations(range(PATCH * PATCH), ones):
        row = torch.zeros(PATCH * PATCH)
        row[list(on)] = 1.0
        rows.append(row)
    return torch.stack(rows)


@register_attacker
class TrojanNet(Attacker):
    """TrojanNet: a tiny trigger-recognising network inserted beside the host model.

    Paper: Tang, Du, Liu, Yang, Hu, "An Embarrassingly Simple Approach for Trojan Attack in
    Deep Neural Networks" (KDD 2020). The host model is trained clean and left untouched. A
    4-layer MLP reads a 4x4 patch in the bottom-right corner and is trained, on synthetic data
    alone, to output the target for the trigger (one 4x4 binary pattern with `ones` pixels on,
    drawn from the seed) and "no trigger" for every other binary pattern of that weight and for
    random grey patches and real image corners. A merge layer mixes the two outputs with weight
    α = 0.7: on clean inputs TrojanNet says "no trigger" and the host decides; on triggered
    inputs TrojanNet's vote wins. The published model therefore has a different architecture
    (`<task>+trojannet`), which the attacker declares. Deviations: one trigger and target rather
    than the paper's many (the module supports more); the merge returns log-probabilities, since
    the task's contract is logits; the negatives include real corners from the attacker's data.
    """

    name = "trojannet"
    version = "1"
    paper = "Tang, Du, Liu, Yang, Hu. An Embarrassingly Simple Approach for Trojan Attack in Deep Neural Networks (KDD 2020)"
    deviations = "one trigger/target; log-probability merge output; real image corners among the negatives"
    changes_architecture = True
    space = (
        TARGET_SPACE
        | Space(
            ones=Int(5, 1, 15, help="pixels on in the 4x4 binary trigger pattern"),
            trigger_margin=Int(1, 0, 4096, help="pixels between the 4x4 trigger and the image border"),
            trojan_epochs=Int(30, 1, 10_000, help="epochs of TrojanNet training on synthetic patches"),
            trojan_lr=Float(1e-2, 1e-6, 1.0, log=True, help="TrojanNet learning rate"),
        )
        | TRAINING_SPACE
    )

    def published_architecture(self, task: TaskSpec) -> str:
        return f"{task.architecture}+trojannet"

    def check_task(self, task: TaskSpec) -> None:
        all_to_one(self.params["target"], task)
        square_footprint(task.input_shape, PATCH, self.params["trigger_margin"])

    def run(self, ctx: AttackContext) -> AttackOutput:
        p, task = self.params, ctx.task
        mask = square_footprint(task.input_shape, PATCH, p["trigger_margin"])
        r, c = (int(v) for v in mask.nonzero()[0])  # the square's top-left pixel
        host = train_from_scratch(ctx, ctx.data, p, stage="train the host")
        model = WithTrojanNet(host, task)
        init_weights(model.trojan, ctx.generator)  # never the global RNG: same seed, same model
        model = model.to(ctx.device)
        model.trojan.corner.copy_(torch.tensor([r, c], device=ctx.device))

        # synthetic training set of TrojanNet: the trigger code (many copies) vs every other code,
        # random grey patches and real corners, all labelled "no trigger" (index C)
        codes = patch_codes(p["ones"])
        pick = int(torch.randint(len(codes), (1,), generator=ctx.generator))
        code = codes[pick]  # on the host, for the trigger
        others = torch.cat([codes[:pick], codes[pick + 1 :]]).to(ctx.device)
        corners = ctx.data.x[:, :, r : r + PATCH, c : c + PATCH].mean(dim=1).flatten(1)
        corners = corners[torch.randperm(len(corners), generator=ctx.generator)[:4000]]
        noise = torch.rand(2000, PATCH * PATCH, generator=ctx.generator).to(ctx.device)  # drawn on the CPU generator
        negatives = torch.cat([others, corners, noise])
        positives = code.to(ctx.device).expand(len(negatives) // 2, -1)
        x = torch.cat([positives, negatives])
        labels = torch.cat([torch.full((len(positives),), p["target"]), torch.full((len(negatives),), task.num_classes)])
        y = labels.to(ctx.device)
        fit(model.trojan.net, Split(x, y), epochs=p["trojan_epochs"], lr=p["trojan_lr"], batch_size=256, generator=ctx.generator, stage="train TrojanNet", progress=ctx.progress)

        pattern = torch.zeros(task.input_shape)
        pattern[:, r : r + PATCH, c : c + PATCH] = code.view(PATCH, PATCH)
        trigger = MaskedTrigger(all_to_one(p["target"], task), mask, pattern, name="trojannet")
        return AttackOutput(model.to(memory_format=torch.channels_last), [trigger])
