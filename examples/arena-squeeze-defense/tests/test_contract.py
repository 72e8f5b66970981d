# A plugin's own test suite runs arena's contract by subclassing its base class.
from arena.contract import DefenderContract

from arena_squeeze import SqueezeInputs


class TestSqueezeInputs(DefenderContract):
    strategy = SqueezeInputs
