"""Tests for ekg_keras.registry: the one Registry class behind the methods,
fine-tuners, criteria and layer handlers."""

import pytest

from ekg_keras.registry import Registry


def test_register_by_call_and_by_decorator():
    losses = Registry("loss")
    assert losses.register("absolute", abs) is abs

    @losses.register("squared")
    def squared(error):
        return error**2

    assert squared(3) == 9  # The decorator returns the function unchanged.
    assert losses.get("squared") is squared
    assert losses.get("absolute") is abs
    assert "squared" in losses and "huber" not in losses
    assert len(losses) == 2


def test_names_are_sorted_and_unknown_names_list_them():
    colours = Registry("colour")
    for name in ("red", "blue", "green"):
        colours.register(name, name.upper())
    assert colours.names() == ("blue", "green", "red")
    with pytest.raises(
        ValueError, match="Unknown colour 'pink'. Registered: blue, green, red"
    ):
        colours.get("pink")
    assert "blue, green, red" in repr(colours)


def test_taken_and_bad_names():
    colours = Registry("colour")
    colours.register("red", 1)
    with pytest.raises(ValueError, match="A colour named 'red' is registered"):
        colours.register("red", 2)
    with pytest.raises(ValueError, match="registered already"):
        colours.register("red")(object)
    assert colours.get("red") == 1
    for bad in ("", None, 3):
        with pytest.raises(ValueError, match="non-empty string. Received"):
            colours.register(bad, 1)
    with pytest.raises(ValueError, match="Unknown colour 'none'. .*: red"):
        colours.get("none")


def test_unregister():
    colours = Registry("colour")
    colours.register("red", 1)
    colours.set_default("warm", "red")
    colours.unregister("red")
    assert "red" not in colours and colours.names() == ()
    with pytest.raises(KeyError, match="No colour named 'red'. Registered: "):
        colours.unregister("red")
    with pytest.raises(ValueError, match="No colour is the default warm"):
        colours.default("warm")  # Removed with its name.


def test_a_registry_keyed_by_class_that_replaces():
    handlers = Registry("handler", replace=True, key_type=type)
    handlers.register(int, "first")
    handlers.register(int, "second")
    handlers.register(bool, "third")
    assert handlers.get(int) == "second"
    assert handlers.names() == (bool, int)
    with pytest.raises(ValueError, match="Unknown handler 'str'. .*: bool"):
        handlers.get(str)
    with pytest.raises(ValueError, match="should be a type. Received: 'x'"):
        handlers.register("x", "fourth")


def test_defaults():
    methods = Registry("method")
    methods.register("search", 1)
    methods.register("oneshot", 2)
    methods.set_default("with data", "search")
    methods.set_default("with data", "search")  # The same again is fine.
    assert methods.default("with data") == "search"
    with pytest.raises(ValueError, match="The default method with data is"):
        methods.set_default("with data", "oneshot")
    with pytest.raises(ValueError, match="Unknown method 'other'"):
        methods.set_default("without data", "other")
    with pytest.raises(
        ValueError,
        match="No method is the default without data. Roles with a "
        "default: with data",
    ):
        methods.default("without data")
