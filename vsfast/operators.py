"""Layers as whole linear operators: the singular values of a 2-D convolution acting on images of
a given size (:func:`conv_spectrum`), rather than of a matrix made from its kernels, and the four
spaces of the Jacobian of any differentiable block at chosen inputs (:func:`jacobian_spaces`),
which linearises what is not one matrix (a residual block, a stage, a network up to a layer).

A convolution with c_in input and c_out output channels on H x W images is a linear map from
R^(c_in H W) to R^(c_out H' W'). Its kernel views (:func:`vsfast.nn.conv_matrix`) are small
matrices whose spectra differ from this map's. With circular padding and stride 1 the map is
block-circulant, and the 2-D DFT makes it block-diagonal (Sedghi, Gupta & Long, "The singular
values of convolutional layers", ICLR 2019): its singular values are the union, over the H x W
frequencies (u, v), of those of the c_out x c_in matrices

    P(u, v) = sum_{p, q} K[:, :, p, q] exp(-2 pi i (u p d_h / H + v q d_w / W))

(d the dilation). With stride s, which keeps every s-th output, the output frequency (u', v')
collects the s_h s_w input frequencies that alias to it: the c_out x (c_in s_h s_w) matrix
[P(u' + a H / s_h, v' + b W / s_w)]_{a, b} / sqrt(s_h s_w), over the (H / s_h) x (W / s_w)
output frequencies. A grouped convolution is the union over its groups. With zero padding the map
is not circulant; its exact singular values come from the dense operator, for inputs small
enough to hold it (``padding="zeros"``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._arrays import check_int, check_tolerance
from .linalg import _choose_method, _spaces_of_factors, spaces, svdvals

__all__ = ["conv_spectrum", "jacobian_spaces"]

PADDINGS = ("circular", "zeros")
DENSE_LIMIT = 1 << 24  # entries of a dense zero-padded operator (128 MiB in float64)
JACOBIAN_LIMIT = 1 << 22  # entries of one input's Jacobian formed whole by method="auto"


def conv_spectrum(weight_or_conv: Any, input_size: int | tuple[int, int], *, padding: str = "circular",
                  pad: int | tuple[int, int] | None = None, groups: int | None = None,
                  dilation: int | tuple[int, int] | None = None,
                  stride: int | tuple[int, int] | None = None) -> np.ndarray:
    """The singular values of a 2-D convolution as a linear map on ``input_size`` images, in
    float64, descending.

    ``weight_or_conv``: a ``torch.nn.Conv2d`` (its weight, groups, dilation, stride and padding),
    or its weight as an array or tensor of shape (c_out, c_in / groups, kh, kw) with ``groups``,
    ``dilation`` and ``stride`` given here (default 1). ``input_size``: H or (H, W).

    ``padding="circular"`` (default): exact for circular padding, by the FFT of the kernels and a
    batched SVD of the (H / s_h) x (W / s_w // 2 + 1) frequency matrices in the core (the other
    frequencies are their complex conjugates, with the same singular values); the stride must
    divide the input size. As many values as the operator has: per group, min(c_out, c_in s_h
    s_w) / groups at each output frequency. The padding amount and which of the s outputs the
    stride keeps only shift the output circularly or change phases, which leaves the singular
    values alone.

    ``padding="zeros"``: exact for zero padding of ``pad`` pixels a side (default: the module's,
    or for a weight "same", dilation * (k - 1) // 2), from the dense operator's SVD; refused when
    that operator would exceed 2^24 entries. The circular spectrum approximates it: the two differ
    by a matrix supported on the border pixels, so each singular value moves by at most that
    matrix's norm (Weyl), a share that shrinks as H and W grow past the kernel.
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding: expected one of {PADDINGS}, got {padding!r}")
    kernel, groups, dilation, stride, module_pad = _conv_parts(weight_or_conv, groups, dilation, stride)
    size = _pair(input_size, "input_size", low=1)
    if padding == "circular":
        return _circular_spectrum(kernel, groups, dilation, stride, size)
    pad = module_pad if pad is None and module_pad is not None else pad
    pad = tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel.shape[2:])) if pad is None else _pair(pad, "pad")
    return np.asarray(svdvals(conv_operator(kernel, groups, dilation, stride, size, pad)))


def _pair(value: Any, name: str, low: int = 0) -> tuple[int, int]:
    pair = (value, value) if np.isscalar(value) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= low
                                 for v in pair):
        raise ValueError(f"{name}: expected an integer >= {low} or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _conv_parts(source: Any, groups: int | None, dilation: Any, stride: Any) -> tuple:
    """(kernel (c_out, c_in / groups, kh, kw) in float64, groups, dilation, stride, the module's
    zero padding or None) of a Conv2d or a weight."""
    module_pad = None
    if hasattr(source, "weight") and hasattr(source, "kernel_size"):
        if len(source.kernel_size) != 2:
            raise ValueError(f"weight_or_conv: expected a 2-D convolution, got {type(source).__name__}")
        if getattr(source, "transposed", False):
            raise ValueError(f"weight_or_conv: expected a forward convolution, got {type(source).__name__}")
        if groups is not None or dilation is not None or stride is not None:
            raise ValueError("groups, dilation, stride: taken from the module; give them only with a weight")
        groups, dilation, stride = source.groups, tuple(source.dilation), tuple(source.stride)
        module_pad = (0, 0) if source.padding == "valid" else None if source.padding == "same" else source.padding
        source = source.weight
    if hasattr(source, "detach"):
        source = source.detach().cpu().double().numpy()
    kernel = np.asarray(source, dtype=np.float64)
    if kernel.ndim != 4 or 0 in kernel.shape:
        raise ValueError(f"weight: expected shape (c_out, c_in / groups, kh, kw), got {kernel.shape}")
    if not np.all(np.isfinite(kernel)):
        raise ValueError("weight: expected finite values")
    groups = 1 if groups is None else groups
    if not isinstance(groups, (int, np.integer)) or groups < 1 or kernel.shape[0] % groups:
        raise ValueError(f"groups: expected a positive divisor of c_out = {kernel.shape[0]}, got {groups!r}")
    return (kernel, int(groups), _pair(1 if dilation is None else dilation, "dilation", low=1),
            _pair(1 if stride is None else stride, "stride", low=1), module_pad)


def _group_kernels(kernel: np.ndarray, groups: int) -> list[np.ndarray]:
    per = kernel.shape[0] // groups
    return [kernel[g * per:(g + 1) * per] for g in range(groups)]


def _circular_spectrum(kernel: np.ndarray, groups: int, dilation: tuple[int, int], stride: tuple[int, int],
                       size: tuple[int, int]) -> np.ndarray:
    (h, w), (sh, sw) = size, stride
    if h % sh or w % sw:
        raise ValueError(f"input_size: the circular spectrum needs the stride {stride} to divide the size {size}")
    c_out, c_in, kh, kw = kernel.shape
    out_h, out_w = h // sh, w // sw
    half = out_w // 2 + 1
    # each output frequency column v stands for itself and its conjugate out_w - v, but 0 and out_w / 2
    twice = np.ones(half, dtype=bool)
    twice[0] = False
    if out_w % 2 == 0:
        twice[-1] = False
    values = []
    for part in _group_kernels(kernel, groups):
        taps = np.zeros((part.shape[0], c_in, h, w))
        for p in range(kh):
            for q in range(kw):  # taps that wrap past the image add up, as the circular map does
                taps[:, :, (p * dilation[0]) % h, (q * dilation[1]) % w] += part[:, :, p, q]
        # input frequency (a out_h + u, b out_w + v) aliases to the output frequency (u, v)
        freq = np.fft.fft2(taps, axes=(2, 3)).reshape(part.shape[0], c_in, sh, out_h, sw, out_w)[..., :half]
        freq = freq.transpose(3, 5, 0, 1, 2, 4).reshape(out_h, half, part.shape[0], c_in * sh * sw) / np.sqrt(sh * sw)
        # P = A + iB has the singular values of [[A, -B], [B, A]], each twice
        real = np.block([[freq.real, -freq.imag], [freq.imag, freq.real]])
        s = np.asarray(svdvals(real))[..., ::2]  # (out_h, half, min(...)): the core's batched SVD
        values += [s.reshape(-1), s[:, twice].reshape(-1)]
    return np.sort(np.concatenate(values))[::-1]


def conv_operator(kernel: np.ndarray, groups: int, dilation: tuple[int, int], stride: tuple[int, int],
                  size: tuple[int, int], pad: tuple[int, int]) -> np.ndarray:
    """The dense matrix of a zero-padded convolution (cross-correlation, as torch computes it)
    on (c_in, H, W) inputs, rows the (c_out, H', W') outputs, both flattened in C order."""
    h, w = size
    c_out, c_in_g, kh, kw = kernel.shape
    per = c_out // groups
    out_h = (h + 2 * pad[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (w + 2 * pad[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"input_size: {size} is smaller than the kernel's reach with pad {pad}")
    entries = c_out * out_h * out_w * c_in_g * groups * h * w
    if entries > DENSE_LIMIT:
        raise ValueError(f"input_size: the dense zero-padded operator would hold {entries:,} entries (limit "
                         f"{DENSE_LIMIT:,}); use padding='circular' or a smaller input_size")
    op = np.zeros((c_out, out_h, out_w, c_in_g * groups, h, w))
    oy, ox = np.arange(out_h), np.arange(out_w)
    for p in range(kh):
        iy = oy * stride[0] + p * dilation[0] - pad[0]
        rows = (iy >= 0) & (iy < h)
        for q in range(kw):
            ix = ox * stride[1] + q * dilation[1] - pad[1]
            cols = (ix >= 0) & (ix < w)
            for o in range(c_out):
                g = o // per
                for c in range(c_in_g):
                    op[o, oy[rows][:, None], ox[cols][None, :], g * c_in_g + c, iy[rows][:, None],
                       ix[cols][None, :]] = kernel[o, c, p, q]
    return op.reshape(c_out * out_h * out_w, -1)


# --- Jacobians ----------------------------------------------------------------------------------

def jacobian_spaces(fn: Any, x: Any, *, k: int | None = None, method: str = "auto", rtol: float | None = None,
                    atol: float | None = None, oversample: int = 10, power_iters: int = 2, seed: int = 0) -> list:
    """The four spaces (:class:`vsfast.Spaces`) of the Jacobian of ``fn`` at each input of the
    batch ``x``: what a small change of the input around x_i keeps and rejects, through the
    whole block at once.

    ``fn``: a torch callable on batches (a module in eval mode, a residual block, a network up to
    a layer) whose outputs for one input do not depend on the others; ``x``: a tensor (B, ...)
    of B inputs. The Jacobian of input i is m x n (m, n: the sizes of one output and one input,
    flattened in C order), so ``signal`` lies in the input's space and ``signal_out`` in the
    output's.

    ``method="exact"`` forms each Jacobian (``torch.func.jacrev``) and takes its SVD in the core;
    ``"randomized"`` never forms it: randomized subspace iteration (``oversample`` extra columns,
    ``power_iters`` passes, the Gaussian test matrix drawn from ``seed``, the same for every
    input) whose products with the Jacobian are ``torch.func.jvp`` and ``vjp`` calls, batched
    over inputs and columns with ``vmap``, in ``x``'s dtype and on its device; it needs ``k``, and
    its top-k triplets are as accurate as :func:`vsfast.rsvd`'s subspace iteration on the formed
    matrix. ``"auto"`` (default): exact where the Jacobian has at most 2^22 entries, else
    randomized (k then required). ``rtol``, ``atol``: the rank rule of :func:`vsfast.spaces`.

    Returns a list of B :class:`vsfast.Spaces`, their bases torch tensors like ``x``.
    """
    import torch

    if not isinstance(x, torch.Tensor) or x.ndim < 2 or 0 in x.shape:
        raise ValueError(f"x: expected a torch tensor (B, ...) of one or more inputs, got {_describe(x)}")
    if not x.is_floating_point():
        raise ValueError(f"x: expected a floating-point tensor, got {x.dtype}")
    one = _one_input(fn)
    with torch.no_grad():
        out = one(x[0])
    m, n = out.numel(), x[0].numel()
    if k is not None:
        k = check_int(k, "k", low=1, high=min(m, n))
    rtol, atol = check_tolerance(rtol, "rtol"), check_tolerance(atol, "atol")
    if method == "auto" and k is None and m * n > JACOBIAN_LIMIT:
        raise ValueError(f"k: each Jacobian is {m} x {n}, too large to form by default; give k for the matrix-free "
                         "route, or method='exact' to form it anyway")
    chosen = "exact" if method == "auto" and (k is None or m * n <= JACOBIAN_LIMIT) else _choose_method(method, k, m, n)
    if chosen == "exact":
        jac = torch.func.vmap(torch.func.jacrev(one))(x.detach()).reshape(x.shape[0], m, n)
        return spaces(jac, k=k, rtol=rtol, atol=atol, method="exact")
    check_int(oversample, "oversample", low=0)
    check_int(power_iters, "power_iters", low=0, high=100)
    u, s, vh = _randomized_jacobian_svd(one, x.detach(), tuple(out.shape), k, oversample, power_iters, seed)
    return _spaces_of_factors(u.contiguous(), s.contiguous(), vh.contiguous(), (m, n), "randomized", rtol, atol)


def _describe(x: Any) -> str:
    shape = getattr(x, "shape", None)
    return f"{type(x).__name__} of shape {tuple(shape)}" if shape is not None else type(x).__name__


def _one_input(fn: Any):
    """fn on one input (no batch axis), as torch.func's transforms take it."""
    def one(z):
        return fn(z.unsqueeze(0)).squeeze(0)
    return one


def _randomized_jacobian_svd(one, x, out_shape: tuple[int, ...], k: int, oversample: int, power_iters: int,
                             seed: int):
    """Top-k U (B, m, k), S (B, k), Vh (B, k, n) of each input's Jacobian by subspace iteration
    on jvp/vjp products: Q spans J Omega, refined by (J J^T)^q, then the SVD of Q^T J."""
    import torch
    from torch.func import jvp, vjp, vmap

    in_shape = x.shape[1:]
    m, n = math.prod(out_shape), math.prod(in_shape)
    width = min(k + oversample, m, n)
    generator = torch.Generator().manual_seed(int(seed))
    omega = torch.randn(n, width, generator=generator, dtype=torch.float64).to(x.dtype).to(x.device)

    def times(xi, cols):  # J_i @ cols (n x w) -> m x w
        tangents = cols.T.reshape(width, *in_shape)
        return vmap(lambda t: jvp(one, (xi,), (t,))[1])(tangents).reshape(width, m).T

    def times_transposed(xi, cols):  # J_i^T @ cols (m x w) -> n x w
        pull = vjp(one, xi)[1]
        return vmap(lambda c: pull(c.reshape(out_shape))[0])(cols.T).reshape(width, n).T

    q = torch.linalg.qr(vmap(times, in_dims=(0, None))(x, omega)).Q
    for _ in range(power_iters):
        q = torch.linalg.qr(vmap(times_transposed)(x, q)).Q
        q = torch.linalg.qr(vmap(times)(x, q)).Q
    small = vmap(times_transposed)(x, q).transpose(1, 2)  # Q^T J: (B, w, n)
    ub, s, vh = torch.linalg.svd(small, full_matrices=False)
    return (q @ ub)[..., :k], s[..., :k], vh[..., :k, :]
