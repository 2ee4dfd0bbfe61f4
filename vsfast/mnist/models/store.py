"""Weights on disk: a safetensors file plus a JSON card that describes and pins it."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from torch import nn

from ..data import cache_dir

from .nets import mnist_fcnn1, mnist_fcnn5, mnist_resnet18

__all__ = ["BUILDERS", "SHIPPED", "STORAGE_DTYPES", "WEIGHTS_DIR", "amend_card", "canonical", "card_path", "load",
           "load_weights", "models_cache_dir", "read_card", "save"]

BUILDERS = {"fcnn1": mnist_fcnn1, "fcnn5": mnist_fcnn5, "resnet18": mnist_resnet18}

#: Weights that ship inside the package. ResNet18's are stored in float16 (22 MB instead of 45 MB);
#: its card gives the test accuracy measured from exactly those weights.
WEIGHTS_DIR = Path(__file__).parent / "weights"
SHIPPED = ("fcnn1", "fcnn5", "resnet18")

#: Storage dtypes a weights file may hold its floating-point tensors in; they are cast back to
#: the network's dtype on load.
STORAGE_DTYPES = ("float32", "float16", "bfloat16")

CARD_FORMAT = "vsfast-weights/1"


def canonical(name: str) -> str:
    """``"fcnn1"`` for "fcnn1", "mnist_fcnn1", "FCNN-1" and so on; ValueError if unknown."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected a model name, one of {', '.join(BUILDERS)}; got {type(name).__name__}")
    key = name.lower().replace("-", "").replace("_", "")
    key = key.removeprefix("mnist")
    if key not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(BUILDERS)}")
    return key


def models_cache_dir() -> Path:
    """Where trained weights are cached: ``cache_dir() / "models"`` (see :func:`vsfast.mnist.data.cache_dir`)."""
    return cache_dir() / "models"


def card_path(weights: str | os.PathLike) -> Path:
    """The JSON card that belongs to a ``.safetensors`` file."""
    return Path(weights).with_suffix(".json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save(model: nn.Module, name: str, folder: str | os.PathLike, card: dict, *,
         storage_dtype: str | None = None) -> Path:
    """Write ``<name>.safetensors`` and its card ``<name>.json`` into ``folder``.

    The card gets the weights' SHA-256, the list of tensors and the storage dtype added. Each
    file is written under a temporary name and renamed, so a reader never sees half a file.

    Parameters
    ----------
    storage_dtype
        ``"float16"`` or ``"bfloat16"``: store the floating-point tensors in that dtype (half
        the size; :func:`load_weights` casts them back). Default: as they are.

    Returns
    -------
    pathlib.Path
        The safetensors file.

    Raises
    ------
    ValueError
        An unknown storage dtype, or a tensor with values beyond its range.
    """
    from safetensors.torch import save_file

    name = canonical(name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: _stored(k, v.detach().cpu().contiguous(), storage_dtype) for k, v in model.state_dict().items()}
    if storage_dtype is not None:
        card = dict(card, storage_dtype=storage_dtype)
    target = folder / f"{name}.safetensors"
    tmp = _temporary(folder, target.name)
    try:
        save_file(tensors, tmp, metadata={"model": name, "format": CARD_FORMAT})
        os.chmod(tmp, 0o644)
        card = {
            "format": CARD_FORMAT,
            "model": name,
            **card,
            "weights_file": target.name,
            "weights_sha256": _sha256(tmp),
            "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
                        for k, v in tensors.items()},
        }
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_text(card_path(target), json.dumps(card, indent=2) + "\n")
    return target


def _stored(key: str, tensor, storage_dtype: str | None):
    """A floating-point tensor in the storage dtype (others as they are), checked to fit it."""
    import torch

    if storage_dtype is None or not tensor.is_floating_point():
        return tensor
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage_dtype: expected one of {', '.join(STORAGE_DTYPES)}, got {storage_dtype!r}")
    stored = tensor.to(getattr(torch, storage_dtype)).contiguous()
    if not torch.isfinite(stored).all():
        raise ValueError(f"tensor {key!r} has values beyond {storage_dtype}'s range; store it in a wider dtype")
    return stored


def _temporary(folder: Path, name: str) -> Path:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    os.close(fd)
    os.chmod(tmp, 0o644)
    return Path(tmp)


def _write_text(path: Path, text: str) -> None:
    tmp = _temporary(path.parent, path.name)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def amend_card(weights: str | os.PathLike, fields: dict) -> dict:
    """Add ``fields`` to the card of a weights file (checked against the file first); returns the
    new card."""
    card = {**read_card(weights), **fields}
    _write_text(card_path(weights), json.dumps(card, indent=2) + "\n")
    return card


def read_card(weights: str | os.PathLike, name: str | None = None) -> dict:
    """The card of a weights file, checked against the file.

    Raises
    ------
    ValueError
        The card is missing, unreadable, for another model, or its SHA-256 does not match.
    """
    weights = Path(weights)
    path = card_path(weights)
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{weights}: no card {path.name} beside it") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable card ({exc})") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise ValueError(f"{path}: not a {CARD_FORMAT} card")
    if name is not None and card.get("model") != name:
        raise ValueError(f"{path}: card is for model {card.get('model')!r}, expected {name!r}")
    actual = _sha256(weights)
    if card.get("weights_sha256") != actual:
        raise ValueError(
            f"{path}: card records SHA-256 {card.get('weights_sha256')} but {weights.name} has {actual}; "
            "the card does not describe these weights"
        )
    return card


def load_weights(model: nn.Module, weights: str | os.PathLike, name: str | None = None) -> dict:
    """Load a weights file into ``model`` after checking its card and every tensor.

    Parameters
    ----------
    model
        The network; its ``state_dict`` sets the expected names, shapes and dtypes.
    weights
        The ``.safetensors`` file; its card ``.json`` must sit beside it.
    name
        Expected model name in the card, if any.

    Returns
    -------
    dict
        The card.

    Raises
    ------
    ValueError
        The card does not match the file, or tensors are missing, unexpected, or of the wrong
        shape or dtype.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"no weights file {weights}")
    card = read_card(weights, name)
    try:
        tensors = load_file(weights)
    except SafetensorError as exc:
        raise ValueError(f"{weights}: not a readable safetensors file ({exc})") from None

    import torch

    storage = card.get("storage_dtype")
    if storage is not None and storage not in STORAGE_DTYPES:
        raise ValueError(f"{card_path(weights)}: unknown storage_dtype {storage!r}; expected one of "
                         f"{', '.join(STORAGE_DTYPES)}")
    expected = model.state_dict()
    problems = [f"missing tensor {k!r}" for k in expected if k not in tensors]
    problems += [f"unexpected tensor {k!r}" for k in tensors if k not in expected]
    for k in expected.keys() & tensors.keys():
        want, got = expected[k], tensors[k]
        if got.shape != want.shape:
            problems.append(f"{k!r} has shape {tuple(got.shape)}, expected {tuple(want.shape)}")
        # Floating-point tensors are stored in the card's storage dtype, when it names one.
        stored = getattr(torch, storage) if storage and want.is_floating_point() else want.dtype
        if got.dtype != stored:
            problems.append(f"{k!r} has dtype {got.dtype}, expected {stored}")
    if problems:
        raise ValueError(f"{weights} does not fit {type(model).__name__}: " + "; ".join(sorted(problems)))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    return card


def load(name: str, pretrained: bool = True, *, weights: str | os.PathLike | None = None) -> nn.Module:
    """One of the paper's MNIST networks, in eval mode.

    Parameters
    ----------
    name
        ``"fcnn1"``, ``"fcnn5"`` or ``"resnet18"`` (``"mnist_fcnn1"`` etc. work too).
    pretrained
        Load the trained weights that ship with the package (ResNet18's stored in float16).
    weights
        A ``.safetensors`` file (with its card) to load instead.

    Returns
    -------
    torch.nn.Module
        The network, with the weights' card as ``model.card`` when weights were loaded.

    Raises
    ------
    ValueError
        Unknown name, or weights that do not match the network or their card.
    """
    name = canonical(name)
    model = BUILDERS[name]()
    if weights is None and pretrained:
        weights = WEIGHTS_DIR / f"{name}.safetensors"
    if weights is not None:
        model.card = load_weights(model, weights, name)
    return model.eval()
