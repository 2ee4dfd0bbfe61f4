"""The paper's MNIST networks (FCNN-1, FCNN-5, ResNet18), their training and their weights.

>>> from vsfast.mnist import models
>>> net = models.load("fcnn5")           # shipped weights, eval mode
>>> net.card["test_accuracy"]            # measured on the 10,000 official test images

Needs torch (and torchvision for ResNet18), safetensors and tqdm: ``pip install vsfast[mnist]``.
"""

from .nets import FCNN5_WIDTHS, mnist_fcnn1, mnist_fcnn5, mnist_resnet18
from .store import (SHIPPED, STORAGE_DTYPES, WEIGHTS_DIR, canonical, load, load_weights, models_cache_dir,
                    read_card, save)
from .training import RECIPES, evaluate, measure_stored, train

NAMES = ("fcnn1", "fcnn5", "resnet18")

__all__ = [
    "FCNN5_WIDTHS", "NAMES", "RECIPES", "SHIPPED", "STORAGE_DTYPES", "WEIGHTS_DIR", "canonical", "evaluate",
    "load", "load_weights", "measure_stored", "mnist_fcnn1", "mnist_fcnn5", "mnist_resnet18", "models_cache_dir",
    "read_card", "save", "train",
]
