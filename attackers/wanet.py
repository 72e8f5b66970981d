from __future__ import annotations

from arena.attacks import RATE_SPACE, TARGET_SPACE, TRAINING_SPACE, PoisoningAttacker, PoisonSet, all_to_one
from arena.params import Float, Int, Space
from arena.protocol import TaskSpec, Trigger
from arena.registry import register_attacker
from arena.triggers import WarpTrigger


@register_attacker
class WaNet(PoisoningAttacker):
    """WaNet: an imperceptible, smooth warp of the whole image is the trigger.

    Paper: Nguyen & Tran, "WaNet – Imperceptible Warping-based Backdoor Attack" (ICLR 2021). A
    random (2, k, k) control grid (uniform in [-1, 1] from `warp_seed`, normalised by its mean
    absolute value) is upsampled bicubically to the image, scaled by the warping strength s / H,
    added to the identity sampling grid and clamped; the image is resampled through it
    (grid_sample). A `poison_rate` fraction of the training data gets the warp and the target
    label (all-to-one); a `noise_rate` fraction (the paper's cross ratio 2 × ρ_a) gets the warp
    plus a per-sample random perturbation of the grid, uniform in [-1, 1] / H ("noise mode"), and
    keeps its true label: so the network learns the exact warp, not "any warp", and a defense
    that searches for the trigger finds no simple pattern. Defaults are the paper's for MNIST's
    28x28 images (k = 4, s = 0.5, ρ_a = 0.1, cross ratio 2). Declared per dataset: on 8x8
    `digits` the paper's warp moves pixels by a fraction of a pixel and noise mode then erases
    the backdoor (ASR 0.11-0.18 over warp seeds 0-2); there use `strength: 1.0, poison_rate: 0.3`
    (benchmarks/results/zoo2-digits.txt, `bash benchmarks/zoo2_digits.sh`).
    Deviations: the paper warps a fraction of every batch on the fly; here fixed warped copies
    are added to the training set once (the house's poisoning mechanism), the poisoned ones drawn
    only from non-target samples; all-to-all and the grid rescaling factor are left out.
    """

    name = "wanet"
    version = "1"
    paper = "Nguyen & Tran. WaNet - Imperceptible Warping-based Backdoor Attack (ICLR 2021)"
    deviations = "fixed warped copies added to the training set instead of warping each batch on the fly; poisoned copies only from non-target samples; all-to-one only"
    space = (
        TARGET_SPACE
        | RATE_SPACE
        | Space(
            noise_rate=Float(0.2, 0.0, 1.0, help="copies with a noisy warp and their true labels (noise mode), as a fraction of the data; 0 turns noise mode off", search=(0.0, 0.4)),
            grid_size=Int(4, 2, 4096, help="side k of the random control grid of the warp (coarser is smoother)", search=(2, 8)),
            strength=Float(0.5, 0.0, 64.0, help="warping strength s: the flow, of mean magnitude 1, is scaled by s / image height", search=(0.25, 2.0)),
            warp_seed=Int(0, 0, 2**31 - 2, help="seed of the control grid (the noise-mode perturbations use the next seed)"),
        )
        | TRAINING_SPACE
    )

    def _warp(self, task: TaskSpec, noise_seed: int | None = None, name: str = "warp") -> WarpTrigger:
        p = self.params
        trigger = WarpTrigger(all_to_one(p["target"], task), p["grid_size"], p["strength"], p["warp_seed"], noise_seed, name)
        trigger.check_fits(task.input_shape)
        return trigger

    def triggers(self, task: TaskSpec) -> list[Trigger]:
        return [self._warp(task)]

    def poison_sets(self, task: TaskSpec) -> list[PoisonSet]:
        sets = [PoisonSet(self._warp(task), self.params["poison_rate"])]
        if self.params["noise_rate"] > 0:
            sets.append(PoisonSet(self._warp(task, self.params["warp_seed"] + 1, "noisy_warp"), self.params["noise_rate"], relabel=False))
        return sets
