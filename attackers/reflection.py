from __future__ import annotations

import torch

from arena.attacks import TARGET_SPACE, TRAINING_SPACE, all_to_one, train_from_scratch
from arena.errors import ParamError
from arena.params import Choice, Float, Int, Space
from arena.protocol import AllToOne, AttackOutput, Split, TaskSpec
from arena.registry import register_attacker
from arena.strategy import AttackContext, Attacker
from arena.training import predict
from arena.triggers import REFLECTION_MODELS, ReflectionTrigger

# Inputs a candidate reflection is scored on in the selection: enough to rank candidates, few
# enough that scoring a pool costs less than training the surrogate on a large dataset.
SCORE_INPUTS = 256


@register_attacker
class Reflection(Attacker):
    """Reflection backdoor (Refool): clean-label poisoning with natural-looking reflections as the trigger.

    Paper: Liu, Ma, Bailey, Lu, "Reflection Backdoor: A Natural Backdoor Attack on Deep Neural
    Networks" (ECCV 2020). A reflection image x_R is passed through one of the paper's physical
    reflection models (`reflection_model`: in focus, a sharp copy; out of focus, blurred by a
    Gaussian of std `sigma`; ghost, a copy plus a shifted copy of weight `ghost_decay`) and added:
    x' = clip(x + alpha · (k ⊗ x_R)). Clean-label: a `poison_rate` share of the target class's
    training images get a reflection, every label stays as it is, and the model is trained from
    scratch; it learns the reflection as a feature of the target class, so at test time a
    reflection on any input sends it to the target. Reflection images are selected by their
    effectiveness: a surrogate is trained on data poisoned with a pool of `num_candidates`
    candidates, each candidate is scored by the share of the attacker's non-target images that
    the surrogate sends to the target when that reflection is added, and the best
    `num_reflections` form the trigger (each test input gets one of them, chosen by the
    trigger's own seeded generator). Defaults from the paper: the out-of-focus model at full
    intensity (alpha 1) and a selection that keeps 4% of its candidates (the paper's 200 of 5000:
    20 of 500). Deviations: the reflection images come from the attacker's own training data
    (images of the other classes), not from a separate natural-image set (PascalVOC in the
    paper), since the attacker holds no other data; the selection is a successive halving over
    `selection_rounds` surrogate trainings (each round keeps the better half of its candidates,
    never fewer than `num_reflections`), scored on up to 256 of the attacker's own non-target
    training images, instead of the paper's weight updates over many rounds on a validation set
    (`selection_rounds` 0: `num_reflections` random candidates); one reflection model and
    intensity for the whole trigger (the paper draws the model, its blur and intensity per
    image); every model adds its layer (the paper blends sharp and ghost reflections convexly,
    dimming the image) and the out-of-focus synthesis has no gamma or over-exposure correction
    (grey-scale images in [0, 1], clipped); blur and ghost offsets are in pixels of the small
    images (sigma 1, offset 1, the paper's sigma 1-5 and offsets 3-8 being for images of
    hundreds of pixels).
    """

    name = "reflection"
    version = "1"
    paper = "Liu, Ma, Bailey, Lu. Reflection Backdoor: A Natural Backdoor Attack on Deep Neural Networks (ECCV 2020)"
    deviations = (
        "reflection images from the attacker's own non-target training data; selection by successive halving over a few surrogate trainings "
        "scored on the attacker's training images; one reflection model and intensity per trigger; every model additive, "
        "no gamma or over-exposure correction; blur and ghost offsets scaled to small images"
    )
    space = (
        TARGET_SPACE
        | Space(
            poison_rate=Float(0.5, 0.0, 1.0, low_open=True, help="share of the target class's training images given a reflection", search=(0.1, 1.0)),
            reflection_model=Choice("out_of_focus", options=REFLECTION_MODELS, help="physical reflection model: sharp, Gaussian-blurred, or ghost (double image)", search=True),
            alpha=Float(1.0, 0.0, 1.0, low_open=True, help="intensity of the added reflection layer (the paper: out of focus at full intensity, sharp or ghost at 0.05-0.45)", search=(0.2, 1.0)),
            sigma=Float(1.0, 0.0, 64.0, help="std of the out-of-focus blur, in pixels", search=(0.0, 2.0)),
            ghost_offset=Int(1, 0, 4096, help="shift of the ghost's second copy, in pixels down and right", search=(1, 3)),
            ghost_decay=Float(0.5, 0.0, 1.0, help="weight of the ghost's second copy"),
            num_reflections=Int(20, 1, 100_000, help="reflection images in the trigger", search=(1, 50)),
            num_candidates=Int(500, 1, 100_000, help="candidate reflection images the selection starts from (at most the attacker's non-target images)"),
            selection_rounds=Int(1, 0, 10, help="surrogate trainings of the effectiveness selection (0: random reflections)", search=(0, 2)),
            surrogate_fraction=Float(0.5, 0.0, 1.0, low_open=True, help="each surrogate's training epochs, as a share of the budget"),
        )
        | TRAINING_SPACE
    )

    def trigger(self, reflections: torch.Tensor, goal: AllToOne, seed: int = 0) -> ReflectionTrigger:
        p = self.params
        return ReflectionTrigger(
            goal,
            reflections,
            reflection_model=p["reflection_model"],
            alpha=p["alpha"],
            sigma=p["sigma"],
            ghost_offset=p["ghost_offset"],
            ghost_decay=p["ghost_decay"],
            seed=seed,
        )

    def check_task(self, task: TaskSpec) -> None:
        p = self.params
        if p["selection_rounds"] > 0 and p["num_candidates"] < p["num_reflections"]:
            raise ParamError(f"num_candidates ({p['num_candidates']}) is below num_reflections ({p['num_reflections']}): the selection keeps the best candidates, so it needs at least as many.")
        self.trigger(torch.zeros(1, *task.input_shape), all_to_one(p["target"], task)).check_fits(task.input_shape)

    def run(self, ctx: AttackContext) -> AttackOutput:
        p = self.params
        goal = all_to_one(p["target"], ctx.task)
        data = ctx.data
        others = torch.nonzero(data.y.cpu() != goal.target).flatten()
        if len(others) < p["num_reflections"]:
            raise ParamError(f"the attacker's data has {len(others)} images outside the target class, fewer than the {p['num_reflections']} reflection images asked for; lower num_reflections.")
        pool_size = min(p["num_candidates"], len(others)) if p["selection_rounds"] > 0 else p["num_reflections"]
        pool = data.x[others[torch.randperm(len(others), generator=ctx.generator)[:pool_size]].to(ctx.device)]
        of_target = torch.nonzero(data.y.cpu() == goal.target).flatten()
        chosen = of_target[torch.randperm(len(of_target), generator=ctx.generator)[: max(1, round(p["poison_rate"] * len(of_target)))]].to(ctx.device)
        if p["selection_rounds"] > 0:
            pool = self.select(ctx, pool, chosen, others, goal)
        trigger = self.trigger(pool, goal, seed=int(torch.randint(2**31 - 1, (1,), generator=ctx.generator)))
        x = data.x.clone()
        x[chosen] = trigger.apply(data.x[chosen])
        model = train_from_scratch(ctx, Split(x, data.y), p, stage="train on reflection poison")
        return AttackOutput(model, [trigger])

    def select(self, ctx: AttackContext, pool: torch.Tensor, chosen: torch.Tensor, others: torch.Tensor, goal: AllToOne) -> torch.Tensor:
        """The `num_reflections` candidates of `pool` whose reflections a surrogate trained on
        them sends most often to the target (Refool's effectiveness selection, successive halving)."""
        p = self.params
        data = ctx.data
        shaper = self.trigger(pool, goal)  # the reflection model, to add given reflection images
        epochs = max(1, round(p["surrogate_fraction"] * ctx.task.epochs))
        scored_on = data.x[others[torch.randperm(len(others), generator=ctx.generator)[:SCORE_INPUTS]].to(ctx.device)]
        for round_ in range(p["selection_rounds"]):
            # each poisoned image gets a candidate of the current pool, drawn on the attack's generator
            which = torch.randint(len(pool), (len(chosen),), generator=ctx.generator)
            x = data.x.clone()
            x[chosen] = shaper.reflect(data.x[chosen], pool[which.to(ctx.device)])
            surrogate = train_from_scratch(ctx, Split(x, data.y), p, epochs=epochs, stage=f"train selection surrogate {round_ + 1}")
            scores = torch.stack([(predict(surrogate, shaper.reflect(scored_on, candidate.expand_as(scored_on))) == goal.target).float().mean() for candidate in pool]).cpu()
            keep = p["num_reflections"] if round_ == p["selection_rounds"] - 1 else max(p["num_reflections"], len(pool) // 2)
            pool = pool[scores.argsort(descending=True, stable=True)[:keep].to(ctx.device)]
        return pool
