# A plugin's own test suite runs arena's contract by subclassing its base class.
from arena_squeeze import SqueezeInputs

from arena import DefenderContract


class TestSqueezeInputs(DefenderContract):
    strategy = SqueezeInputs
