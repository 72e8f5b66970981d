"""Misbehaving defenders, installed as a plugin, for the failure-isolation tests."""

import time

from arena.protocol import DefenseOutcome
from arena.strategy import Defender


class Raises(Defender):
    """Raises inside its hook."""

    name = "raises"
    version = "1"
    paper = "test double"

    def run(self, model, ctx):
        raise RuntimeError("this defense is broken on purpose")


class Hangs(Defender):
    """Never returns."""

    name = "hangs"
    version = "1"
    paper = "test double"

    def run(self, model, ctx):
        time.sleep(3600)
        return DefenseOutcome()


class Garbage(Defender):
    """Returns something that is not a defense outcome, after printing to stdout."""

    name = "garbage"
    version = "1"
    paper = "test double"

    def run(self, model, ctx):
        print("plugin noise on stdout")
        return "not an outcome"
