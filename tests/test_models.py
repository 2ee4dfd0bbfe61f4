"""The MNIST networks: architectures, shipped weights and cards, refusals, training."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
from safetensors.torch import load_file, save_file  # noqa: E402
from torch import nn  # noqa: E402

from vsfast.cli import main as cli  # noqa: E402
from vsfast.mnist import data, models  # noqa: E402
from vsfast.mnist.models import store, training  # noqa: E402

THRESHOLDS = {"fcnn1": 0.92, "fcnn5": 0.97, "resnet18": 0.99}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These networks are small: one thread is quicker, and immune to a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def real_root():
    root = os.environ.get("VSFAST_DATA")
    if not root:
        pytest.skip("VSFAST_DATA is not set: no real MNIST files to test against")
    root = Path(root)
    if not all((root / f"{n}.gz").is_file() or (root / n).is_file() for n in data.MD5):
        pytest.skip(f"VSFAST_DATA={root} does not hold the four MNIST IDX files")
    return root


@pytest.fixture(scope="module")
def test_set(real_root):
    x, y = data.load("test", real_root)
    return torch.from_numpy(x), torch.from_numpy(y)


@pytest.fixture
def fcnn1_copy(tmp_path):
    """A copy of the shipped FCNN-1 weights and card, to tamper with."""
    for suffix in (".safetensors", ".json"):
        shutil.copy(models.WEIGHTS_DIR / f"fcnn1{suffix}", tmp_path / f"fcnn1{suffix}")
    return tmp_path / "fcnn1.safetensors"


def rewrite(weights: Path, tensors: dict) -> None:
    """Replace the weights and re-pin the card to them: only the tensors are wrong."""
    save_file(tensors, weights)
    card = json.loads(store.card_path(weights).read_text())
    card["weights_sha256"] = store._sha256(weights)
    store.card_path(weights).write_text(json.dumps(card))


# ----------------------------------------------------------------------------- architectures


def test_fcnn1_architecture():
    net = models.mnist_fcnn1()
    assert [type(m) for m in net] == [nn.Flatten, nn.Linear]
    assert net[1].weight.shape == (10, 784)
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_fcnn5_is_a_linear_selu_chain():
    net = models.mnist_fcnn5()
    assert isinstance(net, nn.Sequential) and isinstance(net[0], nn.Flatten)
    layers = list(net)[1:]
    assert [type(m) for m in layers] == [nn.Linear, nn.SELU] * 4 + [nn.Linear]
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == list(zip(models.FCNN5_WIDTHS, models.FCNN5_WIDTHS[1:]))
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_resnet18_takes_one_channel():
    pytest.importorskip("torchvision")
    net = models.mnist_resnet18().eval()
    assert net.conv1.in_channels == 1 and net.fc.out_features == 10
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_names():
    assert models.canonical("mnist_fcnn1") == models.canonical("FCNN-1") == "fcnn1"
    assert models.canonical("mnist_resnet18") == "resnet18"
    with pytest.raises(ValueError, match="unknown model"):
        models.load("vgg16")
    net = models.load("mnist_fcnn5")
    assert not net.training and net.card["model"] == "fcnn5"
    untrained = models.load("fcnn1", pretrained=False)
    assert not untrained.training and not hasattr(untrained, "card")


# ----------------------------------------------------------------------------- shipped weights


@pytest.mark.parametrize("name", ["fcnn1", "fcnn5", "resnet18"])
def test_shipped_weights_reach_their_accuracy(name, test_set):
    """Recomputed on the 10,000 official test images from the shipped weights (ResNet18's from
    float16, cast to float32 on load): at least the paper's accuracy, and the card's figure."""
    if name == "resnet18":
        pytest.importorskip("torchvision")
    net = models.load(name)
    card = net.card
    accuracy = models.evaluate(net, *test_set)
    assert accuracy >= THRESHOLDS[name]
    assert card["test_accuracy"] >= THRESHOLDS[name]
    # Floating-point summation order may differ across CPUs: allow a couple of borderline digits.
    assert abs(round(accuracy * 10000) - card["test_correct"]) <= 2
    assert card["test_images"] == 10000 and card["train_images"] == 60000
    assert card["data"] == data.MD5
    for key in ("hyperparameters", "versions", "wall_time_s", "machine", "seed"):
        assert key in card
    assert card["machine"]["cpu_count"] >= 1 and "torch" in card["versions"]


def test_shipped_cards_pin_their_weights():
    for name in models.SHIPPED:
        weights = models.WEIGHTS_DIR / f"{name}.safetensors"
        card = models.read_card(weights, name)
        assert card["weights_file"] == weights.name
        tensors = load_file(weights)
        assert {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in tensors.items()} == {
            k: [v["shape"], v["dtype"]] for k, v in card["tensors"].items()
        }


def test_fcnn5_weights_have_full_row_rank():
    net = models.load("fcnn5")
    for layer in (m for m in net if isinstance(m, nn.Linear)):
        w = layer.weight.detach().double()
        eig = torch.linalg.eigvalsh(w @ w.T)  # squared singular values
        assert eig.min() > 1e-6 * eig.max()


# ----------------------------------------------------------------------------- refusals


def test_refuses_wrong_shape(fcnn1_copy):
    tensors = load_file(fcnn1_copy)
    tensors["1.weight"] = tensors["1.weight"][:, :783].contiguous()
    rewrite(fcnn1_copy, tensors)
    with pytest.raises(ValueError, match=r"'1.weight' has shape \(10, 783\), expected \(10, 784\)"):
        models.load("fcnn1", weights=fcnn1_copy)


def test_refuses_wrong_dtype(fcnn1_copy):
    tensors = load_file(fcnn1_copy)
    tensors["1.bias"] = tensors["1.bias"].double()
    rewrite(fcnn1_copy, tensors)
    with pytest.raises(ValueError, match="'1.bias' has dtype torch.float64, expected torch.float32"):
        models.load("fcnn1", weights=fcnn1_copy)


def test_refuses_missing_and_unexpected_tensors(fcnn1_copy):
    tensors = load_file(fcnn1_copy)
    tensors["extra"] = tensors.pop("1.bias")
    rewrite(fcnn1_copy, tensors)
    with pytest.raises(ValueError, match="missing tensor '1.bias'.*unexpected tensor 'extra'"):
        models.load("fcnn1", weights=fcnn1_copy)


def test_refuses_weights_that_do_not_match_the_card(fcnn1_copy):
    tensors = load_file(fcnn1_copy)
    tensors["1.bias"] = tensors["1.bias"] + 0.01
    save_file(tensors, fcnn1_copy)  # the card still pins the old file
    with pytest.raises(ValueError, match="SHA-256"):
        models.load("fcnn1", weights=fcnn1_copy)


def test_refuses_tampered_card(fcnn1_copy):
    card_file = store.card_path(fcnn1_copy)
    card = json.loads(card_file.read_text())
    card["weights_sha256"] = "0" * 64
    card_file.write_text(json.dumps(card))
    with pytest.raises(ValueError, match="does not describe these weights"):
        models.load("fcnn1", weights=fcnn1_copy)
    card_file.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable card"):
        models.load("fcnn1", weights=fcnn1_copy)
    card_file.unlink()
    with pytest.raises(ValueError, match="no card"):
        models.load("fcnn1", weights=fcnn1_copy)


def test_refuses_card_of_another_model(fcnn1_copy):
    with pytest.raises(ValueError, match="card is for model 'fcnn1', expected 'fcnn5'"):
        models.load("fcnn5", weights=fcnn1_copy)


def test_refuses_a_file_that_is_not_safetensors(fcnn1_copy):
    fcnn1_copy.write_bytes(b"\x00" * 64)
    card_file = store.card_path(fcnn1_copy)
    card = json.loads(card_file.read_text())
    card["weights_sha256"] = store._sha256(fcnn1_copy)
    card_file.write_text(json.dumps(card))
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        models.load("fcnn1", weights=fcnn1_copy)


# ----------------------------------------------------------------------------- training


def _loss(net, x, y):
    with torch.no_grad():
        return nn.functional.cross_entropy(net(x), y).item()


def test_short_training_lowers_the_loss_and_writes_a_valid_card(real_root, tmp_path):
    x, y = data.load("train", real_root)
    x, y = torch.from_numpy(x[:2000]), torch.from_numpy(y[:2000])
    torch.manual_seed(0)
    before = _loss(models.mnist_fcnn1(), x, y)  # train() starts from this same initialisation

    net, card = models.train("fcnn1", out=tmp_path, epochs=3, limit=2000, data_root=real_root, progress=False)
    assert _loss(net, x, y) < 0.5 * before
    assert not net.training

    loaded = models.load("fcnn1", weights=tmp_path / "fcnn1.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))
    written = loaded.card
    assert written["model"] == "fcnn1" and written["train_images"] == 2000
    assert written["hyperparameters"]["epochs"] == 3
    assert written["test_accuracy"] == card["test_accuracy"] > 0.8
    assert written["data"] == data.MD5
    assert written["machine"]["cpu_count"] == os.cpu_count()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fcnn1.json", "fcnn1.safetensors"]


def test_training_is_deterministic(real_root):
    runs = [models.train("fcnn5", epochs=1, limit=512, data_root=real_root, progress=False, write=False)[0]
            for _ in range(2)]
    for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values()):
        assert torch.equal(a, b)
    other = models.train("fcnn5", epochs=1, limit=512, seed=1, data_root=real_root, progress=False, write=False)[0]
    assert not torch.equal(other[1].weight, runs[0][1].weight)


def test_shift_translates_each_image():
    batch = torch.zeros(64, 1, 28, 28)
    batch[:, 0, 10, 12] = 1.0
    moved = training._shift(batch, 2, torch.Generator().manual_seed(0))
    assert moved.shape == batch.shape and torch.all(moved.sum(dim=(1, 2, 3)) == 1)
    rows, cols = moved[:, 0].nonzero()[:, 1], moved[:, 0].nonzero()[:, 2]
    assert rows.sub(10).abs().max() <= 2 and cols.sub(12).abs().max() <= 2
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 5


def test_cli_train(real_root, tmp_path, capsys):
    args = ["train", "fcnn1", "--out", str(tmp_path), "--epochs", "2", "--limit", "3000", "--data", str(real_root)]
    assert cli(args) == 0
    assert "test accuracy" in capsys.readouterr().out
    card = models.load("fcnn1", weights=tmp_path / "fcnn1.safetensors").card
    assert card["hyperparameters"]["epochs"] == 2 and card["train_images"] == 3000


def test_resnet18_ships_in_float16_and_loads_as_float32():
    pytest.importorskip("torchvision")
    weights = models.WEIGHTS_DIR / "resnet18.safetensors"
    card = models.read_card(weights, "resnet18")
    assert card["storage_dtype"] == "float16" and weights.stat().st_size < 25e6
    stored = load_file(weights)
    net = models.load("resnet18")
    assert not net.training and net.card["weights_sha256"] == card["weights_sha256"]
    for key, value in net.state_dict().items():
        if value.is_floating_point():
            assert stored[key].dtype == torch.float16 and value.dtype == torch.float32
            assert torch.equal(value, stored[key].float())  # exactly the stored values
        else:
            assert torch.equal(value, stored[key])
    assert "test_accuracy_before_storage" in card and card["test_images"] == 10000


def test_storage_dtype_round_trip_and_refusals(tmp_path):
    torch.manual_seed(0)
    net = models.mnist_fcnn5()
    path = models.save(net, "fcnn5", tmp_path, {"test_accuracy": 0.5}, storage_dtype="bfloat16")
    loaded = models.load("fcnn5", weights=path)
    assert loaded.card["storage_dtype"] == "bfloat16"
    for a, b in zip(loaded.state_dict().values(), net.state_dict().values()):
        assert a.dtype == torch.float32 and torch.equal(a, b.to(torch.bfloat16).float())
    tensors = load_file(path)
    tensors["1.bias"] = tensors["1.bias"].float()  # one tensor not in the card's storage dtype
    rewrite(path, tensors)
    with pytest.raises(ValueError, match="'1.bias' has dtype torch.float32, expected torch.bfloat16"):
        models.load("fcnn5", weights=path)
    with pytest.raises(ValueError, match="storage_dtype: expected one of"):
        models.save(net, "fcnn5", tmp_path, {}, storage_dtype="int8")
    with torch.no_grad():
        net[1].weight[0, 0] = 1e6  # beyond float16's largest number, 65504
    with pytest.raises(ValueError, match="'1.weight' has values beyond float16's range"):
        models.save(net, "fcnn5", tmp_path / "other", {}, storage_dtype="float16")


def test_training_in_a_storage_dtype_measures_the_stored_weights(real_root, tmp_path):
    net, card = models.train("fcnn1", out=tmp_path, epochs=1, limit=2000, data_root=real_root, progress=False,
                             storage_dtype="float16")
    loaded = models.load("fcnn1", weights=tmp_path / "fcnn1.safetensors")
    x, y = data.load("test", real_root)
    assert loaded.card["storage_dtype"] == "float16"
    assert loaded.card["test_accuracy"] == card["test_accuracy"] == models.evaluate(loaded, x, y)
    assert loaded.card["test_accuracy_before_storage"] == models.evaluate(net, x, y)


def _corrupt(weights: Path, how: str) -> None:
    if how == "truncated":  # a cut-off file whose card was updated with it: safetensors refuses it
        weights.write_bytes(weights.read_bytes()[:-1000])
        card = json.loads(store.card_path(weights).read_text())
        card["weights_sha256"] = store._sha256(weights)
        store.card_path(weights).write_text(json.dumps(card))
    elif how == "flipped":  # one byte changed: the card's checksum refuses it
        raw = bytearray(weights.read_bytes())
        raw[-10] ^= 0xFF
        weights.write_bytes(bytes(raw))
    elif how == "wrong-card":
        card = json.loads(store.card_path(weights).read_text())
        card["model"] = "fcnn1"
        store.card_path(weights).write_text(json.dumps(card))


@pytest.mark.parametrize("how", ["truncated", "flipped", "wrong-card"])
def test_corrupt_weights_are_refused_and_left_alone(tmp_path, how):
    """Damaged weights are reported, not replaced or deleted: the user decides."""
    pytest.importorskip("torchvision")
    models.save(models.mnist_resnet18(), "resnet18", tmp_path, {"test_accuracy": 0.1}, storage_dtype="float16")
    weights = tmp_path / "resnet18.safetensors"
    _corrupt(weights, how)
    before = {p.name: p.read_bytes() for p in weights.parent.iterdir()}
    with pytest.raises(ValueError, match="safetensors|SHA-256|expected 'resnet18'"):
        models.load("resnet18", weights=weights)
    assert {p.name: p.read_bytes() for p in weights.parent.iterdir()} == before


@pytest.mark.slow
def test_resnet18_full_training(real_root, tmp_path):
    net, card = models.train("resnet18", out=tmp_path, data_root=real_root, storage_dtype="float16")
    assert card["test_accuracy"] >= 0.99 and card["storage_dtype"] == "float16"
    loaded = models.load("resnet18", weights=tmp_path / "resnet18.safetensors")
    x, y = data.load("test", real_root)
    assert models.evaluate(loaded, x[:2000], y[:2000]) >= 0.98


def test_training_leaves_no_hooks_on_the_model(real_root):
    net, _ = models.train("fcnn5", epochs=1, limit=256, data_root=real_root, progress=False, write=False)
    assert all(not module._forward_pre_hooks for module in net.modules())
