"""Every built-in method package has one layout, and `ekg_keras` exports
each registered method's class."""

import importlib

import pytest

import ekg_keras
from ekg_keras import methods

PACKAGES = ("oneshot", "ekg", "soft", "lfpc", "nppm", "sp")


def _builtin_classes():
    classes = {}
    for name in methods.names():
        cls = methods.get(name).method_class
        if cls.__module__.startswith("ekg_keras."):
            classes[name] = cls
    return classes


def test_every_builtin_method_lives_in_its_package_method_module():
    packages = set()
    for name, cls in _builtin_classes().items():
        package = cls.__module__.split(".")[2]
        assert cls.__module__ == f"ekg_keras.methods.{package}.method", name
        assert cls.Options.__module__ == (
            f"ekg_keras.methods.{package}.options"
        ), name
        packages.add(package)
    assert packages == set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_the_package_exports_its_method_and_options(package):
    module = importlib.import_module(f"ekg_keras.methods.{package}")
    exported = [
        cls
        for cls in _builtin_classes().values()
        if cls.__module__.startswith(module.__name__ + ".")
    ]
    for cls in exported:
        assert getattr(module, cls.__name__) is cls
        assert getattr(module, cls.Options.__name__) is cls.Options


def test_ekg_keras_exports_every_registered_method_class():
    for name, cls in _builtin_classes().items():
        assert getattr(ekg_keras, cls.__name__) is cls, name
