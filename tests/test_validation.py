"""Bad input gets a clear exception naming the argument and what was expected."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vsfast

GOOD = np.ones((4, 5))


@pytest.mark.parametrize("fn", [vsfast.svd, lambda a: vsfast.rsvd(a, 2), vsfast.spaces, vsfast.pinv])
@pytest.mark.parametrize("bad,exc,match", [
    (np.ones((4, 5), dtype=np.complex128), TypeError, "float32, float64 or integers"),
    (np.ones((4, 5), dtype=np.float16), TypeError, "float32, float64 or integers"),
    (np.ones((4, 5), dtype=np.longdouble), TypeError, "float32, float64 or integers"),
    (np.array([["a", "b"]]), TypeError, "float32, float64 or integers"),
    ([[1.0, 2.0], [3.0]], TypeError, "array of real numbers"),
    (np.ones(5), ValueError, "stack of matrices"),
    (np.float64(3.0), ValueError, "stack of matrices"),
    (np.ones((0, 5)), ValueError, "non-empty"),
    (np.ones((3, 0, 5)), ValueError, "non-empty"),
    (np.ones((2, 0, 3, 5)), ValueError, "non-empty"),
    (np.full((4, 5), np.nan), ValueError, "finite"),
    (np.full((4, 5), np.inf), ValueError, "finite"),
    (torch.ones((4, 5), dtype=torch.bfloat16), TypeError, "float32, float64 or integers"),
    (torch.ones((4, 5), dtype=torch.complex64), TypeError, "float32, float64 or integers"),
    (torch.ones((4, 5), device="meta"), TypeError, "meta device"),
])
def test_bad_matrices(fn, bad, exc, match):
    with pytest.raises(exc, match=match):
        fn(bad)


@pytest.mark.parametrize("k,exc", [(0, ValueError), (-1, ValueError), (5, ValueError), (10**20, ValueError),
                                   (2.0, TypeError), (True, TypeError), ("2", TypeError), (None, TypeError)])
def test_rsvd_bad_k(k, exc):
    with pytest.raises(exc, match="k"):
        vsfast.rsvd(GOOD, k)


@pytest.mark.parametrize("kwargs,exc", [
    ({"oversample": -1}, ValueError), ({"power_iters": -2}, ValueError), ({"seed": -1}, ValueError),
    ({"seed": 2**64}, ValueError), ({"oversample": 1.5}, TypeError),
])
def test_rsvd_bad_parameters(kwargs, exc):
    with pytest.raises(exc, match=next(iter(kwargs))):
        vsfast.rsvd(GOOD, 2, **kwargs)


def test_spaces_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        vsfast.spaces(GOOD, method="fast")
    with pytest.raises(ValueError, match="needs k"):
        vsfast.spaces(GOOD, method="randomized")
    with pytest.raises(ValueError, match="rtol"):
        vsfast.spaces(GOOD, rtol=-1.0)
    with pytest.raises(ValueError, match="atol"):
        vsfast.spaces(GOOD, atol=float("nan"))
    with pytest.raises(ValueError, match="k"):
        vsfast.spaces(GOOD, k=9)


def test_project_bad_arguments():
    sp = vsfast.spaces(GOOD)
    with pytest.raises(ValueError, match="last dimension of 5"):
        vsfast.project(np.ones((3, 4)), sp)
    with pytest.raises(ValueError, match="side"):
        vsfast.project(np.ones((3, 5)), sp, side="left")
    with pytest.raises(ValueError, match="finite"):
        vsfast.project(np.full((3, 5), np.nan), sp)
    with pytest.raises(TypeError, match="float32, float64 or integers"):
        vsfast.project(np.ones((3, 5), dtype=np.complex64), sp)
    with pytest.raises(ValueError, match="basis"):
        vsfast.project(np.ones((3, 5)), np.ones(5))


def test_core_refuses_what_python_would_have_converted():
    """The compiled core checks its arguments itself."""
    core = vsfast._core
    with pytest.raises(ValueError, match="C-contiguous"):
        core.svd(np.asfortranarray(np.ones((3, 4))))
    with pytest.raises(TypeError, match="float32 or float64"):
        core.svd(np.ones((3, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="k"):
        core.rsvd(np.ones((3, 4)), 4, 10, 2, 0)
    with pytest.raises(ValueError, match="finite"):
        core.rsvd(np.full((3, 4), np.inf), 1, 10, 2, 0)
    with pytest.raises(TypeError, match="dtype of X"):
        core.project(np.ones((3, 4)), np.ones((1, 4), np.float32))


def test_import_needs_neither_torch_nor_matplotlib():
    """`import vsfast` and the linear algebra run with torch and matplotlib unavailable."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None; sys.modules['matplotlib'] = None\n"
            "import numpy as np, vsfast\n"
            "u, s, vh = vsfast.rsvd(np.eye(6), 2); sp = vsfast.spaces(np.ones((2, 5)))\n"
            "assert sp.rank == 1 and 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n")
    subprocess.run([sys.executable, "-c", code], check=True)
