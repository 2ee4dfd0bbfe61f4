"""The paper's application: MNIST, its three networks, and the report and demo built on them.

This subpackage uses the toolkit like any user would; the toolkit never imports it.

>>> from vsfast import mnist
>>> images, labels = mnist.load("test")      # 10,000 x 1 x 28 x 28 float32, checked against MD5
>>> net = mnist.models.load("fcnn5")         # shipped weights, eval mode

- :mod:`vsfast.mnist.data`: the IDX files, fetched with pooch and verified (numpy; pooch to fetch).
- :mod:`vsfast.mnist.models`: FCNN-1, FCNN-5 and ResNet18, training, weights with cards (torch).
- :mod:`vsfast.mnist.report`: a model's spaces and inverse maps as figures, tables and page sections.
- :mod:`vsfast.mnist.demo`: ``vsfast demo``, all of it on the two shipped networks.

Everything: ``pip install vsfast[mnist]``.
"""

from __future__ import annotations

import importlib

from .data import DataError, IDXFormatError, cache_dir, data_dir, load

__all__ = ["DataError", "IDXFormatError", "cache_dir", "data_dir", "demo", "load", "models", "report"]

# These need torch and matplotlib: loaded on first use (PEP 562), so that `vsfast.mnist.load`
# needs numpy only.
_LAZY = {"demo", "models", "report"}


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)
