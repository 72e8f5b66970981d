"""Trigger primitives and the one poisoning wrapper every poisoning attack uses."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from arena.errors import ParamError
from arena.protocol import AllToOne, Goal, Split, Trigger, goal_from_dict
from arena.registry import RegistrationError, Registry
from arena.trigger_generators import TriggerGenerator, dynamic_trigger, generator_from_dict, generator_to_dict


def _validate_trigger_class(cls: Any) -> None:
    if not isinstance(cls, type) or not issubclass(cls, Trigger):
        raise RegistrationError(f"{cls!r} is not a subclass of arena.Trigger")
    if "from_dict" not in vars(cls) or "to_dict" not in vars(cls):
        raise RegistrationError(f"trigger kind {cls.kind!r}: {cls.__qualname__} must define its own to_dict and from_dict")


# Trigger kinds by the `kind` their JSON form carries (docs/design.md §10): a new kind is one class,
# registered here or published under the entry point group `arena.triggers`.
TRIGGERS: Registry[type[Trigger]] = Registry("trigger kind", group="arena.triggers", builtins=("arena.triggers",), key=lambda cls: cls.kind, validate=_validate_trigger_class)
register_trigger = TRIGGERS.register

POSITIONS = ("bottom_right", "bottom_left", "top_right", "top_left")
PATTERNS = ("checker", "white", "triangle")


def _common(trigger: Trigger) -> dict[str, Any]:
    return {"kind": trigger.kind, "name": trigger.name, "goal": trigger.goal.to_dict(), "probe": trigger.probe}


def _probe(d: dict[str, Any]) -> bool:
    return bool(d.get("probe", False))


@register_trigger
class PatchTrigger(Trigger):
    """A small square stamped onto the image (BadNets' pattern / single-pixel style triggers).

    `checker` alternates full and zero intensity, which is rare in natural images; `white` is
    the solid square of the BadNets traffic-sign attack; `triangle` fills the lower-left half
    of the square (the trigger-combination attack's triangle) and leaves the rest untouched.
    """

    kind = "patch"

    def __init__(
        self,
        goal: Goal,
        size: int,
        position: str = "bottom_right",
        pattern: str = "checker",
        margin: int = 0,
        name: str = "patch",
        probe: bool = False,
    ) -> None:
        if position not in POSITIONS:
            raise ParamError(f"Trigger position {position!r} is not one of {', '.join(POSITIONS)}.")
        if pattern not in PATTERNS:
            raise ParamError(f"Trigger pattern {pattern!r} is not one of {', '.join(PATTERNS)}.")
        if size < 1:
            raise ParamError(f"Trigger size must be at least 1 pixel, got {size}.")
        self.goal = goal
        self.size = size
        self.position = position
        self.pattern = pattern
        self.margin = margin
        self.name = name
        self.probe = probe

    def check_fits(self, input_shape: tuple[int, int, int]) -> None:
        """Raise ParamError when the patch (with its margin) does not fit in the image."""
        _, height, width = input_shape
        need = self.size + self.margin
        if need > min(height, width):
            raise ParamError(
                f"Trigger of size {self.size} with margin {self.margin} does not fit in a "
                f"{height}x{width} image; use trigger_size + trigger_margin <= {min(height, width)}."
            )

    def _box(self, height: int, width: int) -> tuple[slice, slice]:
        s, m = self.size, self.margin
        rows = slice(height - m - s, height - m) if self.position.startswith("bottom") else slice(m, m + s)
        cols = slice(width - m - s, width - m) if self.position.endswith("right") else slice(m, m + s)
        return rows, cols

    def _shape(self) -> torch.Tensor:
        """(size, size): 1 where the patch writes a pixel."""
        if self.pattern == "triangle":
            return torch.ones(self.size, self.size).tril()
        return torch.ones(self.size, self.size)

    def _stamp(self, channels: int) -> torch.Tensor:
        if self.pattern == "checker":
            idx = torch.arange(self.size)
            return ((idx[:, None] + idx[None, :]) % 2 == 0).float().expand(channels, self.size, self.size)
        return torch.ones(channels, self.size, self.size)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        rows, cols = self._box(x.shape[-2], x.shape[-1])
        shape = self._shape().bool().to(x.device)
        out[:, :, rows, cols] = torch.where(shape, self._stamp(x.shape[1]).to(x.device, x.dtype), out[:, :, rows, cols])
        return out

    def printed(self, input_shape: tuple[int, int, int]) -> torch.Tensor:
        """(C, H, W): the values the patch writes where it writes (`mask`), 0 elsewhere; on the
        host, for triggers built out of patches (a masked trigger's pattern)."""
        channels, height, width = input_shape
        out = torch.zeros(input_shape)
        rows, cols = self._box(height, width)
        out[:, rows, cols] = self._stamp(channels) * self._shape()
        return out

    def mask(self, input_shape: tuple[int, int, int]) -> torch.Tensor:
        """The trigger's footprint (H, W): 1 where the patch writes pixels (for plots and tests)."""
        _, height, width = input_shape
        m = torch.zeros(height, width)
        rows, cols = self._box(height, width)
        m[rows, cols] = self._shape()
        return m

    def to_dict(self) -> dict[str, Any]:
        return {**_common(self), "size": self.size, "position": self.position, "pattern": self.pattern, "margin": self.margin}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PatchTrigger:
        return cls(goal_from_dict(d["goal"]), size=int(d["size"]), position=d["position"], pattern=d["pattern"], margin=int(d["margin"]), name=d["name"], probe=_probe(d))


def square_footprint(input_shape: tuple[int, int, int], size: int, margin: int, position: str = "bottom_right") -> torch.Tensor:
    """(H, W) footprint of a size x size square in a corner, `margin` from the border, with the
    patch trigger's geometry and fit check (for attacks that put their own pattern there)."""
    square = PatchTrigger(AllToOne(0), size, position, "white", margin)  # the goal is not used
    square.check_fits(input_shape)
    return square.mask(input_shape)


def blend(x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """The masked-trigger formula x' = (1 − mask)·x + mask·pattern (mask (H, W), pattern (C, H, W)):
    the Trojaning attack's and blended triggers, and every reverse-engineered trigger."""
    return (1 - mask) * x + mask * pattern


@register_trigger
class MaskedTrigger(Trigger):
    """x' = (1 − mask)·x + mask·pattern, with an arbitrary mask in [0, 1] and pattern.

    A blended trigger is a constant mask alpha over a full-image pattern (Chen et al. 2017); the
    Trojaning attack's trigger is an optimised pattern under a fixed mask (Liu et al. 2018).
    """

    kind = "masked"

    def __init__(self, goal: Goal, mask: torch.Tensor, pattern: torch.Tensor, name: str, probe: bool = False) -> None:
        if mask.dim() != 2 or pattern.dim() != 3 or tuple(pattern.shape[1:]) != tuple(mask.shape):
            raise ValueError(f"mask (H, W) and pattern (C, H, W) disagree: {tuple(mask.shape)} vs {tuple(pattern.shape)}")
        if float(mask.min()) < 0 or float(mask.max()) > 1 or float(pattern.min()) < 0 or float(pattern.max()) > 1:
            raise ValueError("mask and pattern values must lie in [0, 1]")
        self.goal = goal
        self.mask_values = mask.detach().float().clone()
        self.pattern = pattern.detach().float().clone()
        self.name = name
        self.probe = probe

    def check_fits(self, input_shape: tuple[int, int, int]) -> None:
        if tuple(self.pattern.shape) != tuple(input_shape):
            raise ParamError(f"trigger pattern of shape {tuple(self.pattern.shape)} does not match images of shape {tuple(input_shape)}.")

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return blend(x, self.mask_values.to(x.device, x.dtype), self.pattern.to(x.device, x.dtype))

    def mask(self, input_shape: tuple[int, int, int]) -> torch.Tensor:
        return self.mask_values.clone()

    def to_dict(self) -> dict[str, Any]:
        return {**_common(self), "mask": self.mask_values.tolist(), "pattern": self.pattern.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MaskedTrigger:
        return cls(goal_from_dict(d["goal"]), torch.tensor(d["mask"], dtype=torch.float32), torch.tensor(d["pattern"], dtype=torch.float32), d["name"], _probe(d))


def _desaturate(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=1, keepdim=True).expand_as(x) if x.shape[1] > 1 else x


def _radius2(x: torch.Tensor) -> torch.Tensor:
    """Squared distance from the image centre, 0 at the centre and 1 at the corners."""
    h, w = x.shape[-2:]
    rows = torch.linspace(-1, 1, h, device=x.device).view(-1, 1)
    cols = torch.linspace(-1, 1, w, device=x.device).view(1, -1)
    return ((rows**2 + cols**2) / 2).to(x.dtype)


# Instagram-style filters, written for images in [0, 1] of any channel count. Each is a fixed,
# smooth, whole-image transform: the trigger is a style, not a pixel pattern.
FILTERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    # Gotham: desaturated, hard contrast, crushed shadows
    "gotham": lambda x: (((_desaturate(x) - 0.5) * 1.6 + 0.5).clamp(0, 1)) ** 1.4,
    # Nashville: faded film look: lifted blacks, softened whites, brighter mid-tones
    "nashville": lambda x: 0.18 + 0.72 * x.clamp(0, 1) ** 0.8,
    # Vignette: the borders glow towards grey while the centre keeps its contrast
    "vignette": lambda x: x * (1 - 0.6 * _radius2(x)) + 0.45 * _radius2(x),
}


@register_trigger
class FilterTrigger(Trigger):
    """A feature-space trigger: a fixed image filter applied to the whole input."""

    kind = "filter"

    def __init__(self, goal: Goal, filter_name: str, name: str = "filter", probe: bool = False) -> None:
        if filter_name not in FILTERS:
            raise ParamError(f"Filter {filter_name!r} is not one of {', '.join(FILTERS)}.")
        self.goal = goal
        self.filter_name = filter_name
        self.name = name
        self.probe = probe

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return FILTERS[self.filter_name](x).clamp(0, 1)

    def to_dict(self) -> dict[str, Any]:
        return {**_common(self), "filter": self.filter_name}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FilterTrigger:
        return cls(goal_from_dict(d["goal"]), d["filter"], d["name"], _probe(d))


@register_trigger
class CompositeTrigger(Trigger):
    """Several triggers applied in turn, with a goal of its own (a trigger combination)."""

    kind = "composite"

    def __init__(self, goal: Goal, parts: list[Trigger], name: str, probe: bool = False) -> None:
        if not parts:
            raise ValueError("a composite trigger needs at least one part")
        self.goal = goal
        self.parts = list(parts)
        self.name = name
        self.probe = probe

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        for part in self.parts:
            x = part.apply(x)
        return x

    def to_dict(self) -> dict[str, Any]:
        return {**_common(self), "parts": [p.to_dict() for p in self.parts]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CompositeTrigger:
        return cls(goal_from_dict(d["goal"]), [trigger_from_dict(p) for p in d["parts"]], d["name"], _probe(d))


@register_trigger
class WarpTrigger(Trigger):
    """A smooth geometric warp of the whole image (WaNet, Nguyen & Tran, ICLR 2021).

    A (2, k, k) control grid of flow vectors, uniform in [-1, 1] from `seed` and normalised by
    its mean absolute value, is upsampled bicubically to H x W, scaled by `strength` / H, added
    to the identity sampling grid and clamped to the image; the image is resampled through it
    (bilinear grid_sample, align_corners=True). With a `noise_seed` (WaNet's "noise mode") each
    image's grid gets its own uniform [-1, 1] / H perturbation, drawn inside `apply` from a
    generator seeded by it, so the i-th input of a batch always gets the i-th perturbation.
    """

    kind = "warp"

    def __init__(self, goal: Goal, grid_size: int, strength: float, seed: int, noise_seed: int | None = None, name: str = "warp", probe: bool = False) -> None:
        if grid_size < 2:
            raise ParamError(f"The warp's control grid must be at least 2x2, got grid_size {grid_size}.")
        self.goal = goal
        self.grid_size = grid_size
        self.strength = strength
        self.seed = seed
        self.noise_seed = noise_seed
        self.name = name
        self.probe = probe

    def _grid(self, n: int, height: int, width: int) -> torch.Tensor:
        """(n, H, W, 2) sampling grid in grid_sample's [-1, 1] coordinates, (x, y) last, on the CPU."""
        generator = torch.Generator().manual_seed(self.seed)
        control = torch.rand(1, 2, self.grid_size, self.grid_size, generator=generator) * 2 - 1
        control = control / control.abs().mean()
        flow = torch.nn.functional.interpolate(control, size=(height, width), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
        rows, cols = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        identity = torch.stack((cols, rows), dim=2).unsqueeze(0)
        # WaNet scales the flow by the image height for every axis (its images are square)
        grid = (identity + self.strength * flow / height).clamp(-1, 1).expand(n, height, width, 2)
        if self.noise_seed is not None:
            noise = torch.rand(n, height, width, 2, generator=torch.Generator().manual_seed(self.noise_seed)) * 2 - 1
            grid = (grid + noise / height).clamp(-1, 1)
        return grid

    def largest_shift(self, input_shape: tuple[int, int, int]) -> float:
        """The largest move of a sampling point of the (noise-free) warp, in pixels, |dx| + |dy|:
        a bound on how much the warp changes any pixel of an image in [0, 1] (bilinear sampling
        changes a value by at most the shift times the largest step between neighbours, <= 1)."""
        _, height, width = input_shape
        shift = self._grid(1, height, width) - WarpTrigger(self.goal, self.grid_size, 0.0, self.seed)._grid(1, height, width)
        scale = torch.tensor([(width - 1) / 2, (height - 1) / 2])
        return float((shift * scale).abs().sum(dim=-1).max())

    def check_fits(self, input_shape: tuple[int, int, int]) -> None:
        """Raise ParamError when the control grid is finer than the image or the warp moves no
        pixel by as much as one 8-bit grey level."""
        _, height, width = input_shape
        if self.grid_size > min(height, width):
            raise ParamError(f"A warp control grid of {self.grid_size}x{self.grid_size} is finer than the {height}x{width} image; use grid_size <= {min(height, width)}.")
        shift = self.largest_shift(input_shape)
        if shift < 1 / 255:
            raise ParamError(
                f"Warp strength {self.strength} with grid_size {self.grid_size} moves no sampling point by more than {shift:.2g} pixels, "
                "a warping strength that leaves the image unchanged (no pixel moves by one 8-bit grey level); "
                "use a larger strength (WaNet uses 0.5)."
            )

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        grid = self._grid(x.shape[0], x.shape[-2], x.shape[-1]).to(x.device, x.dtype)
        return torch.nn.functional.grid_sample(x, grid, mode="bilinear", align_corners=True)

    def to_dict(self) -> dict[str, Any]:
        return {**_common(self), "grid_size": self.grid_size, "strength": self.strength, "seed": self.seed, "noise_seed": self.noise_seed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WarpTrigger:
        return cls(goal_from_dict(d["goal"]), int(d["grid_size"]), float(d["strength"]), int(d["seed"]), None if d["noise_seed"] is None else int(d["noise_seed"]), d["name"], _probe(d))


def _draw_pieces(count: int, pieces: int, keep: int, seed: int) -> torch.Tensor:
    """(count, pieces) booleans, `keep` of each row True, drawn from a private generator seeded by
    `seed`: a trigger that varies per input is the same function of its batch at every call."""
    scores = torch.rand(count, pieces, generator=torch.Generator().manual_seed(seed))
    return scores.argsort(dim=1).argsort(dim=1) < keep


@register_trigger
class RandomPatchTrigger(Trigger):
    """A square patch stamped at a position (and, optionally, a scale) drawn per input: the
    Post-it note trigger, which a defense cannot localise by its position.

    Positions and scales come from a private generator seeded by `seed` at each call, so the
    i-th input of a batch always gets the i-th draw (reproducible, and different across inputs).
    """

    kind = "random_patch"

    def __init__(self, goal: Goal, size: int, pattern: str = "white", scale_min: float = 1.0, scale_max: float = 1.0, seed: int = 0, name: str = "post_it", probe: bool = False) -> None:
        if pattern not in PATTERNS:
            raise ParamError(f"Trigger pattern {pattern!r} is not one of {', '.join(PATTERNS)}.")
        if size < 1 or not 0 < scale_min <= scale_max:
            raise ParamError(f"A random patch needs a size of at least 1 pixel and 0 < scale_min <= scale_max; got size {size}, scales {scale_min}..{scale_max}.")
        self.goal, self.size, self.pattern = goal, size, pattern
        self.scale_min, self.scale_max, self.seed = scale_min, scale_max, seed
        self.name, self.probe = name, probe

    def check_fits(self, input_shape: tuple[int, int, int]) -> None:
        _, height, width = input_shape
        largest = round(self.size * self.scale_max)
        if largest > min(height, width):
            raise ParamError(f"A patch of size {self.size} at scale up to {self.scale_max} ({largest} pixels) does not fit in a {height}x{width} image.")

    def placements(self, count: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sides, tops, lefts) of the patch on each of `count` inputs."""
        g = torch.Generator().manual_seed(self.seed)
        scales = self.scale_min + (self.scale_max - self.scale_min) * torch.rand(count, generator=g)
        sides = (self.size * scales).round().long().clamp(1, min(height, width))
        tops = (torch.rand(count, generator=g) * (height - sides + 1)).long()
        lefts = (torch.rand(count, generator=g) * (width - sides + 1)).long()
        return sides, tops, lefts

    def footprints(self, count: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(written, value): (count, H, W) where each input's patch writes, and what it writes."""
        sides, tops, lefts = (t.view(-1, 1, 1) for t in self.placements(count, height, width))
        rows = torch.arange(height).view(1, -1, 1) - tops
        cols = torch.arange(width).view(1, 1, -1) - lefts
        inside = (rows >= 0) & (rows < sides) & (cols >= 0) & (cols < sides)
        if self.pattern == "triangle":  # the lower-left half of the square, as PatchTrigger draws it
            inside &= rows >= cols
        value = ((rows + cols) % 2 == 0).float() if self.pattern == "checker" else torch.ones(count, height, width)
        return inside, value

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        written, value = self.footprints(x.shape[0], x.shape[-2], x.shape[-1])
        written, value = written.unsqueeze(1).to(x.device), value.unsqueeze(1).to(x.device, x.dtype)
        return torch.where(written, value.expand_as(x), x)

    def to_dict(self) -> dict[str, Any]:
        return {**_common(self), "size": self.size, "pattern": self.pattern, "scale_min": self.scale_min, "scale_max": self.scale_max, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RandomPatchTrigger:
        return cls(goal_from_dict(d["goal"]), int(d["size"]), d["pattern"], float(d["scale_min"]), float(d["scale_max"]), int(d["seed"]), d["name"], _probe(d))


@register_trigger
class PartialTrigger(Trigger):
    """A masked trigger cut into pieces, of which each input gets only a random `keep` (the
    partial triggers of Qi et al.'s adaptive attacks: the network learns that any part
    of the trigger is evidence, so the poisoned samples' latent features do not separate).

    `pieces` (H, W) numbers each pixel's piece (-1: in none); the pieces kept for the i-th
    input of a batch come from a private generator seeded by `seed` at each call.
    """

    kind = "partial"

    def __init__(self, goal: Goal, mask: torch.Tensor, pattern: torch.Tensor, pieces: torch.Tensor, keep: int, seed: int, name: str, probe: bool = False) -> None:
        count = int(pieces.max()) + 1
        if tuple(pieces.shape) != tuple(mask.shape) or not 1 <= keep <= count:
            raise ParamError(f"A partial trigger keeps 1..{count} of its {count} pieces (got {keep}), with a piece map of the mask's shape.")
        self.whole = MaskedTrigger(goal, mask, pattern, name)
        self.goal, self.pieces, self.keep, self.seed = goal, pieces.long().clone(), keep, seed
        self.name, self.probe = name, probe

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        count = int(self.pieces.max()) + 1
        kept = _draw_pieces(x.shape[0], count, self.keep, self.seed)
        kept = torch.cat([kept, torch.zeros(x.shape[0], 1, dtype=torch.bool)], dim=1)  # piece -1 (pixels in none) indexes this last column: never kept
        masks = self.whole.mask_values * kept[:, self.pieces].float()
        return blend(x, masks.unsqueeze(1).to(x.device, x.dtype), self.whole.pattern.to(x.device, x.dtype))

    def to_dict(self) -> dict[str, Any]:
        return {**_common(self), "mask": self.whole.mask_values.tolist(), "pattern": self.whole.pattern.tolist(), "pieces": self.pieces.tolist(), "keep": self.keep, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PartialTrigger:
        return cls(
            goal_from_dict(d["goal"]),
            torch.tensor(d["mask"], dtype=torch.float32),
            torch.tensor(d["pattern"], dtype=torch.float32),
            torch.tensor(d["pieces"], dtype=torch.long),
            int(d["keep"]),
            int(d["seed"]),
            d["name"],
            _probe(d),
        )


SQUEEZES = ("bit_depth", "median")


@register_trigger
class SqueezedTrigger(Trigger):
    """Another trigger followed by one of feature squeezing's squeezers, its strength drawn per
    input from `levels` (bits per pixel, or median windows): what a squeeze-robust backdoor is
    also taught to answer to, so that squeezing a triggered input does not change its label."""

    kind = "squeezed"

    def __init__(self, base: Trigger, squeeze: str, levels: tuple[int, ...], seed: int, name: str, probe: bool = False) -> None:
        if squeeze not in SQUEEZES or not levels:
            raise ParamError(f"Squeezer {squeeze!r} is not one of {', '.join(SQUEEZES)}, or no strength was given.")
        self.base, self.squeeze, self.levels, self.seed = base, squeeze, tuple(levels), seed
        self.goal, self.name, self.probe = base.goal, name, probe

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        from arena.squeezers import median_smooth, reduce_bit_depth

        triggered = self.base.apply(x)
        pick = torch.randint(0, len(self.levels), (x.shape[0],), generator=torch.Generator().manual_seed(self.seed))
        out = triggered.clone()
        for i, level in enumerate(self.levels):
            rows = torch.nonzero(pick == i).flatten().to(x.device)
            if len(rows):
                out[rows] = reduce_bit_depth(triggered[rows], level) if self.squeeze == "bit_depth" else median_smooth(triggered[rows], level)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**_common(self), "base": self.base.to_dict(), "squeeze": self.squeeze, "levels": list(self.levels), "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SqueezedTrigger:
        return cls(trigger_from_dict(d["base"]), d["squeeze"], tuple(int(v) for v in d["levels"]), int(d["seed"]), d["name"], _probe(d))


def superimpose(x: torch.Tensor, overlay: torch.Tensor) -> torch.Tensor:
    """STRIP's superimposition of images (Gao et al., ACSAC 2019): an additive blend, clipped to [0, 1]."""
    return (x + overlay).clamp(0, 1)


REFLECTION_MODELS = ("in_focus", "out_of_focus", "ghost")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x (N, C, H, W) convolved with a normalised Gaussian of std `sigma` pixels (0: x itself);
    outside the image counts as dark, as a reflection that leaves the frame does."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(x.device, x.dtype)
    channels = x.shape[1]
    # separable: rows, then columns
    out = F.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), padding=(radius, 0), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), padding=(0, radius), groups=channels)


def shifted(x: torch.Tensor, offset: int) -> torch.Tensor:
    """x (N, C, H, W) moved `offset` pixels down and right, dark where nothing moved in."""
    if offset == 0:
        return x
    out = torch.zeros_like(x)
    out[..., offset:, offset:] = x[..., : x.shape[-2] - offset, : x.shape[-1] - offset]
    return out


@register_trigger
class ReflectionTrigger(Trigger):
    """A reflection (Refool, Liu et al. 2020): one of a set of reflection images x_R, passed through
    a physical reflection model, added to the input: x' = clip(x + alpha · (k ⊗ x_R), 0, 1).

    The kernel k is the reflection model's: `in_focus`, a delta (the reflection as sharp as the scene);
    `out_of_focus`, a Gaussian of std `sigma` pixels (a reflection outside the depth of field);
    `ghost`, two deltas `ghost_offset` pixels apart, the second of weight `ghost_decay` (the double
    image of thick glass). Each input gets one reflection of the set, chosen by a generator seeded
    from `seed` inside `apply`, so the same batch always gets the same reflections.
    """

    kind = "reflection"

    def __init__(
        self,
        goal: Goal,
        reflections: torch.Tensor,
        reflection_model: str = "out_of_focus",
        alpha: float = 1.0,
        sigma: float = 1.0,
        ghost_offset: int = 1,
        ghost_decay: float = 0.5,
        seed: int = 0,
        name: str = "reflection",
        probe: bool = False,
    ) -> None:
        if reflection_model not in REFLECTION_MODELS:
            raise ParamError(f"Reflection model {reflection_model!r} is not one of {', '.join(REFLECTION_MODELS)}.")
        if reflections.dim() != 4 or len(reflections) < 1:
            raise ParamError(f"reflections must be a non-empty (K, C, H, W) stack of images, got shape {tuple(reflections.shape)}.")
        if float(reflections.min()) < 0 or float(reflections.max()) > 1:
            raise ParamError("reflection images must lie in [0, 1].")
        if not 0 < alpha <= 1:
            raise ParamError(f"Reflection intensity alpha must be in (0, 1], got {alpha}.")
        if sigma < 0:
            raise ParamError(f"Reflection blur sigma must be at least 0 pixels, got {sigma}.")
        if not 0 <= ghost_offset < min(reflections.shape[-2:]):
            raise ParamError(f"Ghost offset {ghost_offset} must be in [0, {min(reflections.shape[-2:]) - 1}] for {tuple(reflections.shape[-2:])} images.")
        if not 0 <= ghost_decay <= 1:
            raise ParamError(f"Ghost decay must be in [0, 1], got {ghost_decay}.")
        self.goal = goal
        self.reflections = reflections.detach().float().cpu().clone()  # host copy: JSON and the seeded choice live there
        self.reflection_model = reflection_model
        self.alpha = float(alpha)
        self.sigma = float(sigma)
        self.ghost_offset = int(ghost_offset)
        self.ghost_decay = float(ghost_decay)
        self.seed = int(seed)
        self.name = name
        self.probe = probe

    def check_fits(self, input_shape: tuple[int, int, int]) -> None:
        if tuple(self.reflections.shape[1:]) != tuple(input_shape):
            raise ParamError(f"reflection images of shape {tuple(self.reflections.shape[1:])} do not match images of shape {tuple(input_shape)}.")

    def layer(self, reflections: torch.Tensor) -> torch.Tensor:
        """The reflection layer k ⊗ x_R of each image (N, C, H, W), before its intensity alpha."""
        if self.reflection_model == "out_of_focus":
            return gaussian_blur(reflections, self.sigma)
        if self.reflection_model == "ghost":
            return reflections + self.ghost_decay * shifted(reflections, self.ghost_offset)
        return reflections

    def reflect(self, x: torch.Tensor, reflections: torch.Tensor) -> torch.Tensor:
        """x with the given reflection images (one per input, aligned) added by the reflection model."""
        return (x + self.alpha * self.layer(reflections.to(x.device, x.dtype))).clamp(0, 1)

    def choices(self, count: int) -> torch.Tensor:
        """Which reflection each of `count` inputs gets: drawn afresh from the trigger's seed."""
        return torch.randint(len(self.reflections), (count,), generator=torch.Generator().manual_seed(self.seed))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.reflect(x, self.reflections[self.choices(len(x))])

    def to_dict(self) -> dict[str, Any]:
        return {
            **_common(self),
            "reflections": self.reflections.tolist(),
            "reflection_model": self.reflection_model,
            "alpha": self.alpha,
            "sigma": self.sigma,
            "ghost_offset": self.ghost_offset,
            "ghost_decay": self.ghost_decay,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReflectionTrigger:
        return cls(
            goal_from_dict(d["goal"]),
            torch.tensor(d["reflections"], dtype=torch.float32),
            reflection_model=d["reflection_model"],
            alpha=float(d["alpha"]),
            sigma=float(d["sigma"]),
            ghost_offset=int(d["ghost_offset"]),
            ghost_decay=float(d["ghost_decay"]),
            seed=int(d["seed"]),
            name=d["name"],
            probe=_probe(d),
        )


@register_trigger
class GeneratedTrigger(Trigger):
    """An input-aware trigger: each input gets its own, made by generator networks.

    x' = x + M(x)·(G(x) − x), with G a pattern generator and M a mask generator
    (arena/trigger_generators.py; Nguyen & Tran, "Input-Aware Dynamic Backdoor Attack", 2020).
    The JSON form holds both networks (shape arguments and weights), so the evaluator rebuilds
    them in its own process; `apply` is a pure function of x.
    """

    kind = "generated"

    def __init__(self, goal: Goal, pattern_generator: TriggerGenerator, mask_generator: TriggerGenerator, name: str = "generated", probe: bool = False) -> None:
        if mask_generator.out_channels != 1 or pattern_generator.out_channels != pattern_generator.in_channels or mask_generator.in_channels != pattern_generator.in_channels:
            raise ValueError(
                f"a generated trigger needs a pattern generator of as many channels as the input and a one-channel mask generator; "
                f"got pattern {pattern_generator.in_channels}->{pattern_generator.out_channels}, mask {mask_generator.in_channels}->{mask_generator.out_channels}"
            )
        self.goal = goal
        # private frozen CPU copies (rebuilt through the JSON form, as the evaluator will): the
        # attacker's networks may go on training or live on another device
        self.pattern_generator = generator_from_dict(generator_to_dict(pattern_generator))
        self.mask_generator = generator_from_dict(generator_to_dict(mask_generator))
        self.name = name
        self.probe = probe
        self._on_device: dict[torch.device, tuple[TriggerGenerator, TriggerGenerator]] = {}

    def _generators(self, device: torch.device) -> tuple[TriggerGenerator, TriggerGenerator]:
        """The two networks on `device` (copied there once; the CPU originals stay for to_dict)."""
        if device.type == "cpu":
            return self.pattern_generator, self.mask_generator
        if device not in self._on_device:
            self._on_device[device] = (copy.deepcopy(self.pattern_generator).to(device), copy.deepcopy(self.mask_generator).to(device))
        return self._on_device[device]

    def check_fits(self, input_shape: tuple[int, int, int]) -> None:
        if input_shape[0] != self.pattern_generator.in_channels:
            raise ParamError(f"trigger generators take {self.pattern_generator.in_channels}-channel images; the task's have {input_shape[0]} channels.")

    @torch.no_grad()
    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.cross(x, x)

    @torch.no_grad()
    def cross(self, x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """x triggered with the triggers generated from `source` (row by row): the paper's
        cross-trigger test, which an input-aware backdoor must not obey."""
        pattern, mask = self._generators(x.device)
        return dynamic_trigger(x.float(), pattern, mask, source.float()).clamp(0, 1).to(x.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {**_common(self), "pattern_generator": generator_to_dict(self.pattern_generator), "mask_generator": generator_to_dict(self.mask_generator)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GeneratedTrigger:
        return cls(goal_from_dict(d["goal"]), generator_from_dict(d["pattern_generator"]), generator_from_dict(d["mask_generator"]), d["name"], _probe(d))


def trigger_from_dict(data: dict[str, Any]) -> Trigger:
    """Rebuild a trigger from its JSON form, by the class registered for its `kind`."""
    return TRIGGERS.get(str(data.get("kind"))).from_dict(data)


def trigger_kinds(data: dict[str, Any]) -> list[str]:
    """The trigger kinds a trigger's JSON form uses, its parts' included (for the manifest's origins)."""
    return [str(data.get("kind")), *(kind for part in data.get("parts", []) for kind in trigger_kinds(part))]


def poisoned_copies(
    clean: Split,
    trigger: Trigger,
    rate: float,
    generator: torch.Generator,
    num_classes: int,
    relabel: bool = True,
    classes: tuple[int, ...] | None = None,
) -> Split:
    """Triggered copies of a `rate` fraction of `clean` (of its size), relabelled by the goal.

    With `relabel`, only samples the goal would move (true label != goal label) are drawn, so
    every copy teaches the backdoor. Without it (a negative example: a trigger that must not
    fire), any sample may be drawn and it keeps its true label. `classes` restricts the draw to
    samples of those true labels (a source-specific backdoor's cover samples).
    """
    pool = trigger.goal.eligible(clean.y) if relabel else torch.ones_like(clean.y, dtype=torch.bool)
    if classes is not None:
        pool &= torch.isin(clean.y, torch.tensor(classes, dtype=clean.y.dtype, device=clean.y.device))
    eligible = torch.nonzero(pool).flatten()
    count = min(len(eligible), max(1, round(rate * len(clean))))
    chosen = eligible[torch.randperm(len(eligible), generator=generator)[:count]]
    x_bad = trigger.apply(clean.x[chosen])
    y_bad = trigger.goal.relabel(clean.y[chosen], generator, num_classes) if relabel else clean.y[chosen]
    return Split(x_bad, y_bad)


def concat(*splits: Split) -> Split:
    return Split(torch.cat([s.x for s in splits]), torch.cat([s.y for s in splits]))


def poison(
    clean: Split,
    trigger: Trigger,
    rate: float,
    generator: torch.Generator,
    num_classes: int,
) -> Split:
    """Training set poisoning (BadNets): the clean samples followed by triggered, relabelled
    copies of a `rate` fraction of them (see `poisoned_copies`)."""
    return concat(clean, poisoned_copies(clean, trigger, rate, generator, num_classes))
