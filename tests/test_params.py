import pytest

from arena.errors import ParamError, UnknownNameError
from arena.params import Bool, Choice, Float, Int, Space

SPACE = Space(
    rate=Float(0.1, 0.0, 1.0, low_open=True),
    size=Int(3, 1, 8),
    mode=Choice("a", options=("a", "b")),
    flag=Bool(False),
)


def test_defaults_and_string_coercion():
    assert SPACE.validate({}) == {"rate": 0.1, "size": 3, "mode": "a", "flag": False}
    got = SPACE.validate({"rate": "0.5", "size": "8", "mode": "b", "flag": "true"})
    assert got == {"rate": 0.5, "size": 8, "mode": "b", "flag": True}
    assert isinstance(got["size"], int) and isinstance(got["rate"], float)


@pytest.mark.parametrize(
    "values",
    [{"rate": 0.0}, {"rate": 1.5}, {"rate": "abc"}, {"rate": float("nan")}, {"size": 0}, {"size": 2.5}, {"size": True}, {"mode": "c"}, {"flag": "maybe"}],
)
def test_values_outside_the_space_are_refused(values):
    with pytest.raises(ParamError):
        SPACE.validate(values)


def test_unknown_name_suggests_the_close_one():
    with pytest.raises(UnknownNameError, match="Did you mean 'rate'"):
        SPACE.validate({"rte": 0.2})


def test_a_default_outside_its_space_is_a_bug():
    with pytest.raises(ParamError):
        Space(x=Int(10, 0, 5))


def test_tune_space_has_one_domain_per_parameter():
    from ray.tune.search.sample import Domain

    tuned = SPACE.tune_space()
    assert set(tuned) == set(SPACE) and all(isinstance(d, Domain) for d in tuned.values())


def test_parameters_added_later_leave_a_spec_only_at_their_own_defaults():
    """The recipe's parameters keep earlier specs' keys at their defaults; another strategy's
    parameter of the same name is its own and always recorded."""
    from arena.attacks import TRAINING_SPACE
    from arena.params import Int, Space

    recipe = TRAINING_SPACE.validate({"optimizer": "sgd"})
    assert TRAINING_SPACE.key_params(recipe) == {"lr": 0.001, "batch_size": 128, "optimizer": "sgd"}
    theirs = Space(epochs=Int(5, 0, 100))
    assert theirs.key_params({"epochs": 0}) == {"epochs": 0} and theirs.key_params({"epochs": 5}) == {"epochs": 5}
