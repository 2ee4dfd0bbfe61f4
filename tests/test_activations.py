"""The CPU's activations and their inverses, entry by entry, in units in the last place (ulps) of
the exact value: computed in long double (64-bit significand on x86), with formulas that do not
cancel, so that the reference is exact to well below an ulp of float64. The inputs cover each
function's whole domain: every binade from the subnormals to the largest finite numbers, a dense
grid where the functions bend, the saturated ends (SELU's and ELU's floor, tanh's and sigmoid's
+-1 and 0, sigmoid's subnormal results) and, for the inverses, the clamp at each end of the range.

The activations run through a 1 x 1 chain whose weight is 1, so the chain's matrix products are
exact and what is measured is the activation alone. docs/inverse-maps.md gives the bound."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import vsfast

ULPS = 3.0  # the bound docs/inverse-maps.md states, for every activation, both ways, both dtypes
LONG = np.longdouble
SELU_L = LONG("1.0507009873554804934193349852946")
SELU_FLOOR_HI, SELU_FLOOR_LO = 1.7580993408473768, 1.41535193800845e-17  # lambda * alpha = hi + lo
ACTIVATIONS = [("selu", None), ("elu", 0.7), ("tanh", None), ("sigmoid", None), ("leaky_relu", 0.2)]
DTYPES = [np.float32, np.float64]

pytestmark = pytest.mark.skipif(np.finfo(LONG).nmant < 60,
                                reason="needs a long double wider than float64 for the float64 reference")


def floor_of(name: str, param: float | None) -> LONG:
    """SELU's and ELU's lower limit, as hi + lo (long double cannot hold SELU's to 2^-100)."""
    return LONG(SELU_FLOOR_HI) + LONG(SELU_FLOOR_LO) if name == "selu" else LONG(param)


def forward_exact(name: str, param: float | None, x: np.ndarray) -> np.ndarray:
    x = x.astype(LONG)
    below = np.minimum(x, 0)
    if name == "selu":
        return np.where(x > 0, SELU_L * x, floor_of(name, param) * np.expm1(below))
    if name == "elu":
        return np.where(x > 0, x, LONG(param) * np.expm1(below))
    if name == "tanh":
        return np.tanh(x)
    if name == "sigmoid":
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1, e) / (1 + e)
    return np.where(x >= 0, x, LONG(param) * x)


def log1p_of_ratio(y: np.ndarray, name: str, param: float | None) -> np.ndarray:
    """log(1 + y / c) for -c < y <= 0; near -c from c + y, formed exactly from c's two parts."""
    hi, lo = (SELU_FLOOR_HI, SELU_FLOOR_LO) if name == "selu" else (param, 0.0)
    c = LONG(hi) + LONG(lo)
    near = np.log(np.maximum((LONG(hi) + y) + LONG(lo), LONG(1e-300)) / c)
    return np.where(y < -c / 2, near, np.log1p(y / c))


def inverse_exact(name: str, param: float | None, y: np.ndarray) -> np.ndarray:
    y = y.astype(LONG)
    below = np.minimum(y, 0)
    if name == "selu":
        return np.where(y > 0, y / SELU_L, log1p_of_ratio(below, name, param))
    if name == "elu":
        return np.where(y > 0, y, log1p_of_ratio(below, name, param))
    if name == "tanh":
        return np.arctanh(y)
    if name == "sigmoid":  # logit, without the cancellation of log(y) - log1p(-y) near 1/2
        low = y < LONG(1) / 3
        return np.where(low, np.log(np.where(low, y, 0.25) / (1 - y)),
                        np.log1p(np.where(low, 0.5, 2 * y - 1) / (1 - y)))
    return np.where(y >= 0, y, y / LONG(param))


def ulps(got: np.ndarray, exact: np.ndarray, dtype) -> np.ndarray:
    """|got - exact| in ulps of the dtype at the exact value (its subnormal spacing below the
    smallest normal number)."""
    info = np.finfo(dtype)
    magnitude = np.abs(exact)
    exponent = np.floor(np.log2(np.maximum(magnitude, LONG(info.smallest_normal))))
    return np.abs(got.astype(LONG) - exact) / np.exp2(exponent - info.nmant)


def unit_chain(name: str, param: float | None, dtype) -> vsfast.Chain:
    return vsfast.Chain([(np.ones((1, 1), dtype), None, name if param is None else (name, param))])


def whole_line(dtype, rng) -> np.ndarray:
    """Finite values of every binade (random bit patterns), a dense grid over where the functions
    bend and saturate, and both signs of tiny to large magnitudes."""
    info = np.finfo(dtype)
    bits = np.uint32 if dtype == np.float32 else np.uint64
    pattern = rng.integers(0, np.iinfo(bits).max, 200_000, dtype=bits, endpoint=True).view(dtype)
    pattern = pattern[np.isfinite(pattern)]
    reach = 110.0 if dtype == np.float32 else 760.0  # sigmoid's results reach 0 around there
    grid = np.linspace(-reach, reach, 400_001)
    magnitudes = np.logspace(np.log10(info.smallest_subnormal), np.log10(info.max) - 1, 20_000)
    return np.concatenate([pattern, grid, magnitudes, -magnitudes, [0.0]]).astype(dtype)


def domain(name: str, param: float | None, dtype, rng) -> np.ndarray:
    """The whole line less where the activation's value overflows the dtype (SELU's lambda x
    beyond max / lambda)."""
    x = whole_line(dtype, rng)
    return x[np.abs(forward_exact(name, param, x)) <= np.finfo(dtype).max]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,param", ACTIVATIONS)
def test_forward_within_ulps_over_the_whole_line(rng, name, param, dtype):
    x = domain(name, param, dtype, rng)
    exact = forward_exact(name, param, x)
    got = unit_chain(name, param, dtype).forward(x[:, None])[:, 0]
    error = ulps(got, exact, dtype)
    worst = int(np.argmax(error))
    assert error[worst] <= ULPS, f"{name}({x[worst]!r}) = {got[worst]!r}, exact {exact[worst]!r}"


def in_range(name: str, param: float | None, dtype) -> tuple[np.ndarray, np.ndarray]:
    """The ends of the interval the inverse clamps into, as in activations.hpp: the range less a
    relative margin of sqrt(eps) at each finite end."""
    margin = np.sqrt(np.finfo(dtype).eps).astype(dtype)
    one = dtype(1)
    if name in ("selu", "elu"):
        return -dtype(floor_of(name, param)) * (one - margin), dtype(np.inf)
    if name == "tanh":
        return -(one - margin), one - margin
    if name == "sigmoid":
        return margin, one - margin
    return dtype(-np.inf), dtype(np.inf)


def walk(end, toward, count: int = 1000) -> np.ndarray:
    """`count` consecutive values of end's dtype, from `end` toward `toward`."""
    values = [end]
    for _ in range(count - 1):
        values.append(np.nextafter(values[-1], toward))
    return np.array(values)


def targets(name: str, param: float | None, dtype, rng) -> np.ndarray:
    """Values of the activation's range: its outputs over the whole line, and a thousand
    consecutive values at each finite end of the clamp interval."""
    y = unit_chain(name, param, dtype).forward(domain(name, param, dtype, rng)[:, None])[:, 0]
    lo, hi = in_range(name, param, dtype)
    ends = [walk(end, toward) for end, toward in ((lo, hi), (hi, lo)) if np.isfinite(end)]
    y = np.concatenate([y, *ends]).astype(dtype)
    return y[(y >= lo) & (y <= hi) & np.isfinite(y)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,param", ACTIVATIONS)
def test_inverse_within_ulps_over_the_range(rng, name, param, dtype):
    y = targets(name, param, dtype, rng)
    exact = inverse_exact(name, param, y)
    got = unit_chain(name, param, dtype).reconstruct(y[:, None]).inputs[:, 0]
    error = ulps(got, exact, dtype)
    worst = int(np.argmax(error))
    assert error[worst] <= ULPS, f"inverse {name}({y[worst]!r}) = {got[worst]!r}, exact {exact[worst]!r}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,param", [a for a in ACTIVATIONS if a[0] != "leaky_relu"])
def test_inverse_outside_the_range_is_the_inverse_at_its_end(name, param, dtype):
    lo, hi = in_range(name, param, dtype)
    beyond = [(lo, lo - abs(lo) - 1), (hi, hi + abs(hi) + 1)]
    end, outside = np.array([[e, o] for e, o in beyond if np.isfinite(e)], dtype).T
    chain = unit_chain(name, param, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", vsfast.RangeWarning)
        at_end = chain.reconstruct(end[:, None])
        clamped = chain.reconstruct(outside[:, None])
    assert at_end.clamped == (0,) and clamped.clamped == (len(outside),)
    np.testing.assert_array_equal(clamped.inputs, at_end.inputs)


@pytest.mark.parametrize("dtype", DTYPES)
def test_saturated_ends_are_the_limits_rounded(dtype):
    far = np.array([[-1e4], [-200.0], [200.0], [1e4]], dtype)
    np.testing.assert_array_equal(unit_chain("tanh", None, dtype).forward(far)[:, 0], [-1, -1, 1, 1])
    np.testing.assert_array_equal(unit_chain("sigmoid", None, dtype).forward(far)[[2, 3], 0], [1, 1])
    assert unit_chain("sigmoid", None, dtype).forward(far)[0, 0] == 0
    selu = unit_chain("selu", None, dtype).forward(far[:2])[:, 0]
    np.testing.assert_array_equal(selu, -dtype(floor_of("selu", None)))
    elu = unit_chain("elu", 0.7, dtype).forward(far[:2])[:, 0]
    np.testing.assert_array_equal(elu, -dtype(0.7))
    # sigmoid's smallest results are subnormal, not flushed to 0: e^x below the smallest normal
    tiny = np.log(np.finfo(dtype).smallest_normal) - 5
    got = unit_chain("sigmoid", None, dtype).forward(np.array([[tiny]], dtype))[0, 0]
    assert 0 < got < np.finfo(dtype).smallest_normal
