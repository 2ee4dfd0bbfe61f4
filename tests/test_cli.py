"""The ``vsfast`` command's etiquette: ``python -m vsfast``, ``--version``, exit statuses 0/1/2 with
one-line errors, and messages through the ``vsfast`` logger at the level -q/-v choose."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

import vsfast
from vsfast import cli


def run(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VSFAST_DATA"}  # none of these cases reads MNIST
    return subprocess.run([sys.executable, "-m", "vsfast", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=env)


def test_version(tmp_path):
    done = run("--version", cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"vsfast {vsfast.__version__}\n", "")


def test_runtime_error_is_one_line_naming_the_file(tmp_path):
    pytest.importorskip("torch")
    missing = tmp_path / "trained" / "fcnn1.safetensors"
    done = run("analyze", "fcnn1", "--weights", str(missing), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == f"vsfast: error: no weights file {missing}\n"
    assert done.stdout == ""

    verbose = run("analyze", "fcnn1", "-v", "--weights", str(missing), cwd=tmp_path)
    assert verbose.returncode == 1
    assert verbose.stderr.startswith("Traceback (most recent call last):")
    assert verbose.stderr.endswith(f"vsfast: error: no weights file {missing}\n")


@pytest.mark.parametrize("args, message", [
    (["analyze", "fcnn1", "--bogus"], "unrecognized arguments: --bogus"),
    (["analyze", "vgg16"], "argument TARGET: expected fcnn1, fcnn5, resnet18, a checkpoint"),
    (["analyze", "torchvision:"], "argument TARGET: expected torchvision:NAME"),
    (["analyze", "fcnn1", "--k", "some"], "argument --k: expected a positive integer, got 'some'"),
    (["bench"], "the following arguments are required: SHAPE|CHECKPOINT"),
    (["train", "fcnn1", "--epochs", "0"], "argument --epochs: expected a positive integer, got 0"),
    ([], "the following arguments are required: COMMAND"),
])
def test_usage_errors_exit_2(tmp_path, args, message):
    done = run(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("usage: vsfast") and message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture
def chatty(monkeypatch):
    """The train command replaced by one that logs at every level and prints its result."""
    def command(args):
        log = logging.getLogger("vsfast.mnist.models.training")
        log.debug("a debug message")
        log.info("progress message")
        log.warning("a warning")
        print("the result")
        return 0

    monkeypatch.setattr(cli, "_cmd_train", command)


@pytest.mark.parametrize("options, shown, hidden", [
    ([], ["progress message", "a warning"], ["a debug message"]),
    (["-q"], ["a warning"], ["progress message", "a debug message"]),
    (["-v"], ["DEBUG vsfast.mnist.models.training: a debug message", "progress message"], []),
])
def test_messages_go_to_stderr_at_the_chosen_level(chatty, capsys, options, shown, hidden):
    logger = logging.getLogger("vsfast")
    handlers, level = list(logger.handlers), logger.level
    for argv in (options + ["train", "fcnn1"], ["train", "fcnn1"] + options):  # before or after the command
        assert cli.main(argv) == 0
        out, err = capsys.readouterr()
        assert out == "the result\n"
        assert all(text in err for text in shown) and not any(text in err for text in hidden), err
    # The command's handler and level last as long as the command: the library configures none.
    assert logger.handlers == handlers and logger.level == level


def test_unexpected_errors_name_their_type(monkeypatch, capsys):
    def command(args):
        raise KeyError("fcnn9")

    monkeypatch.setattr(cli, "_cmd_train", command)
    assert cli.main(["train", "fcnn1"]) == 1
    assert capsys.readouterr().err == "vsfast: error: KeyError: 'fcnn9'\n"
