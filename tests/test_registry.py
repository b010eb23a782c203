"""The one registry helper: register, lookup, build, list, and its one-line error for an unknown name."""

import pytest

from fishertune.errors import InputError, UsageError
from fishertune.registry import Registry, did_you_mean, suggestion, unknown_name


def test_register_lookup_build_and_list():
    shapes = Registry("shape")

    @shapes.register
    class Square:
        name = "square"

        def __init__(self, side):
            self.side = side

    shapes.register(tuple, "pair")
    assert shapes.lookup("square") is Square and shapes["pair"] is tuple
    assert shapes.build("square", 3).side == 3 and shapes.build("pair", [1, 2]) == (1, 2)
    assert sorted(shapes) == ["pair", "square"] and len(shapes) == 2 and "square" in shapes
    assert dict(shapes.items()) == {"square": Square, "pair": tuple}
    with pytest.raises(UsageError, match="shape 'square' is registered twice"):
        shapes.register(Square)
    with pytest.raises(UsageError, match="needs a name"):
        shapes.register(object())


def test_unknown_names_are_one_line_with_the_nearest_and_every_valid_name():
    shapes = Registry("shape")
    for name in ("square", "circle", "triangle"):
        shapes.register(object(), name)
    with pytest.raises(InputError) as error:
        shapes.lookup("sqare")
    assert str(error.value) == ("unknown shape 'sqare' (did you mean 'square'?); "
                                "available: circle, square, triangle")
    with pytest.raises(InputError) as error:
        shapes.build("hexagon")
    assert str(error.value) == "unknown shape 'hexagon'; available: circle, square, triangle"
    with pytest.raises(KeyError):  # the mapping itself stays a plain mapping
        shapes["hexagon"]  # noqa: B018


def test_hints():
    assert did_you_mean("stpes", ["steps", "seed"], prefix="train.") == " (did you mean 'train.steps'?)"
    assert did_you_mean("zzz", ["steps"]) == ""
    assert suggestion("vall", ["val", "train"]) == " (did you mean 'val'?); available: train, val"
    assert suggestion("x", []) == ""
    error = unknown_name("dataset", "kitti", ["folder", "acdc"])
    assert isinstance(error, InputError) and str(error) == "unknown dataset 'kitti'; available: acdc, folder"


def test_the_project_registries_refuse_unknown_names_alike():
    from fishertune.data.layouts import DATASETS
    from fishertune.models import BACKBONES, HEADS
    from fishertune.tuners import TUNERS

    for registry, wrong, right in ((TUNERS, "lorra", "lora"), (BACKBONES, "dinov3", "dinov2"),
                                   (HEADS, "liner", "linear"), (DATASETS, "cityscape", "cityscapes")):
        expected = (f"unknown {registry.kind} '{wrong}' (did you mean '{right}'?); "
                    f"available: {', '.join(sorted(registry))}")
        with pytest.raises(InputError) as error:
            registry.lookup(wrong)
        assert str(error.value) == expected
