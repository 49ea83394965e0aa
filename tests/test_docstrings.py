"""Every example in the public docstrings runs and prints what it says (doctest), with the package's public names,
torch and nn in scope as a user's session would have them."""

import doctest

import pytest
import torch
from torch import nn

import fused_sigmoid
from fused_sigmoid import _extension, functional, fusion, modules, reference, training

PUBLIC_NAMES = {name: getattr(fused_sigmoid, name) for name in fused_sigmoid.__all__}


MODULES = [_extension, functional, fusion, modules, reference, training]


@pytest.mark.parametrize("module", MODULES, ids=lambda module: module.__name__)
def test_docstring_examples_run(module):
    extra = {"torch": torch, "nn": nn, **PUBLIC_NAMES}
    failures, tried = doctest.testmod(module, extraglobs=extra, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert tried > 0, f"{module.__name__} has no docstring examples"
    assert failures == 0, f"{failures} of {tried} docstring examples in {module.__name__} failed (see the output above)"


def test_every_public_name_has_a_docstring_with_an_example():
    for name, value in PUBLIC_NAMES.items():
        assert value.__doc__ and (">>>" in value.__doc__ or "e.g." in value.__doc__), f"{name} has no example"
