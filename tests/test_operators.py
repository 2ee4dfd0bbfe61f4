"""conv_spectrum against the SVD of the dense operator that torch's own convolution defines."""

from __future__ import annotations

import numpy as np
import pytest

from vsfast import conv_spectrum
from vsfast.operators import DENSE_LIMIT

torch = pytest.importorskip("torch")


def dense_operator(conv, size: tuple[int, int]) -> np.ndarray:
    """The matrix of ``conv`` on (c_in, H, W) inputs: torch applied to every basis image."""
    c_in, (h, w) = conv.in_channels, size
    basis = torch.eye(c_in * h * w, dtype=torch.float64).reshape(-1, c_in, h, w)
    with torch.no_grad():
        return conv(basis).reshape(c_in * h * w, -1).T.numpy()


def reference(conv, size) -> np.ndarray:
    return np.linalg.svd(dense_operator(conv, size), compute_uv=False)


def tolerance(s: np.ndarray, size: int) -> float:
    """A backward-stable float64 SVD is off by p(n) eps sigma_1 at most (Weyl); 10 n covers both
    LAPACK's and the FFT's rounding (the DFT of the taps is a sum of at most H W terms)."""
    return 10 * size * np.finfo(np.float64).eps * s[0]


def make(c_in, c_out, k, *, groups=1, dilation=1, stride=1, padding=None, mode="circular", seed=0):
    torch.manual_seed(seed)
    pad = dilation * (k - 1) // 2 if padding is None else padding
    return torch.nn.Conv2d(c_in, c_out, k, padding=pad, padding_mode=mode, groups=groups, dilation=dilation,
                           stride=stride, bias=False).double()


CIRCULAR = [  # (c_in, c_out, k, groups, dilation, stride, (H, W))
    (2, 3, 3, 1, 1, 1, (5, 5)),
    (4, 2, 3, 1, 1, 1, (6, 7)),  # even and odd widths: the self-conjugate frequency columns
    (4, 4, 3, 2, 1, 1, (6, 6)),  # grouped
    (3, 3, 3, 1, 2, 1, (7, 8)),  # dilated
    (3, 5, 1, 1, 1, 1, (4, 4)),  # 1 x 1
    (2, 2, 5, 1, 1, 1, (3, 4)),  # a kernel wider than the image: its taps wrap and add
    (3, 8, 3, 1, 1, 2, (6, 8)),  # strided: a c_out x c_in s^2 block at each output frequency
    (1, 4, 7, 1, 1, 2, (8, 8)),  # ResNet18's first convolution's form: 7 x 7, stride 2, one channel
    (4, 6, 3, 2, 1, (2, 1), (6, 5)),  # grouped, a stride per axis
    (4, 4, 1, 1, 1, 2, (4, 6)),  # a 1 x 1 downsampling
]


@pytest.mark.parametrize("c_in, c_out, k, groups, dilation, stride, size", CIRCULAR)
def test_circular_spectrum_is_the_dense_operators(c_in, c_out, k, groups, dilation, stride, size):
    conv = make(c_in, c_out, k, groups=groups, dilation=dilation, stride=stride)
    s, ref = conv_spectrum(conv, size), reference(conv, size)
    assert s.dtype == np.float64 and s.shape == ref.shape and np.all(np.diff(s) <= 0)
    np.testing.assert_allclose(s, ref, rtol=0, atol=tolerance(ref, ref.size))


def test_a_weight_with_its_groups_dilation_and_stride_is_the_module():
    conv = make(4, 6, 3, groups=2, dilation=2, stride=3)
    expected = conv_spectrum(conv, (9, 9))
    np.testing.assert_array_equal(conv_spectrum(conv.weight, 9, groups=2, dilation=2, stride=3), expected)
    np.testing.assert_array_equal(conv_spectrum(conv.weight.detach().numpy(), 9, groups=2, dilation=2, stride=3),
                                  expected)


@pytest.mark.parametrize("k, padding, dilation, stride, size", [(3, 1, 1, 1, (5, 6)), (3, 0, 1, 1, (6, 5)),
                                                                  (3, 2, 2, 1, (5, 5)), (5, 2, 1, 1, (4, 4)),
                                                                  (3, 1, 1, 2, (7, 6)), (7, 3, 1, 2, (8, 8))])
def test_zero_padded_spectrum_is_the_dense_operators(k, padding, dilation, stride, size):
    conv = make(3, 4, k, padding=padding, dilation=dilation, stride=stride, mode="zeros")
    s, ref = conv_spectrum(conv, size, padding="zeros"), reference(conv, size)
    np.testing.assert_allclose(s, ref, rtol=0, atol=tolerance(ref, ref.size))


def test_zero_padding_defaults_to_same_for_a_weight():
    conv = make(2, 3, 3, mode="zeros")  # padding 1: "same"
    np.testing.assert_allclose(conv_spectrum(conv.weight, 6, padding="zeros"), reference(conv, (6, 6)), rtol=0,
                               atol=1e-12)


def test_circular_and_zero_padded_spectra_differ_by_the_border():
    # Weyl: the two operators differ only in rows that read border pixels; that difference's norm
    # bounds how far any singular value moves.
    conv = make(3, 3, 3, mode="zeros")
    size = (8, 8)
    zeros, circular = dense_operator(conv, size), dense_operator(make(3, 3, 3), size)
    gap = np.linalg.norm(zeros - circular, 2)
    moved = np.abs(conv_spectrum(conv, size, padding="zeros") - conv_spectrum(conv, size))
    assert 0 < moved.max() <= gap * (1 + 1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match=r"stride \(2, 2\) to divide the size \(7, 7\)"):
        conv_spectrum(torch.nn.Conv2d(2, 2, 3, stride=2), 7)
    with pytest.raises(ValueError, match="forward convolution"):
        conv_spectrum(torch.nn.ConvTranspose2d(2, 2, 3), 8)
    with pytest.raises(ValueError, match="padding: expected one of"):
        conv_spectrum(make(2, 2, 3), 8, padding="reflect")
    with pytest.raises(ValueError, match="finite"):
        conv_spectrum(np.full((2, 2, 3, 3), np.nan), 8)
    with pytest.raises(ValueError, match="groups: expected a positive divisor"):
        conv_spectrum(np.ones((3, 1, 3, 3)), 8, groups=2)
    with pytest.raises(ValueError, match=r"weight: expected shape \(c_out"):
        conv_spectrum(np.ones((3, 3)), 8)
    with pytest.raises(ValueError, match="input_size: expected an integer >= 1"):
        conv_spectrum(np.ones((2, 2, 3, 3)), 0)
    with pytest.raises(ValueError, match="stride: expected an integer >= 1"):
        conv_spectrum(np.ones((2, 2, 3, 3)), 8, stride=0)
    with pytest.raises(ValueError, match="taken from the module"):
        conv_spectrum(make(2, 2, 3), 8, groups=1)
    side = int(np.sqrt(DENSE_LIMIT) / 8) + 1  # 64 channels on side x side exceed the limit
    with pytest.raises(ValueError, match="dense zero-padded operator would hold"):
        conv_spectrum(np.ones((8, 8, 3, 3)), side, padding="zeros")


# --- jacobian_spaces ------------------------------------------------------------------------------

from vsfast import jacobian_spaces  # noqa: E402


def dense_jacobians(fn, x) -> np.ndarray:
    """Each input's Jacobian, (B, m, n), by torch.autograd.functional.jacobian in float64."""
    out = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda z: fn(z.unsqueeze(0)).squeeze(0), xi)
        out.append(jac.reshape(-1, xi.numel()).numpy())
    return np.stack(out)


def projector(basis) -> np.ndarray:
    b = np.asarray(basis)
    return b @ b.T


def residual_block(channels: int = 3, seed: int = 0):
    """torchvision's BasicBlock (two 3x3 convolutions, batch norms, the skip path), in eval mode
    with batch-norm statistics that are not the identity."""
    from torchvision.models.resnet import BasicBlock

    torch.manual_seed(seed)
    block = BasicBlock(channels, channels).double().eval()
    for bn in (block.bn1, block.bn2):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return block


def test_exact_jacobian_spaces_of_a_residual_block_are_the_dense_jacobians():
    block = residual_block()
    x = torch.randn(3, 3, 5, 5, dtype=torch.float64)
    found, dense = jacobian_spaces(block, x), dense_jacobians(block, x)
    assert len(found) == 3
    for sp, jac in zip(found, dense):
        ref = np.linalg.svd(jac, compute_uv=False)
        assert sp.shape == jac.shape == (75, 75) and sp.method == "exact"
        # float64 SVDs of the same matrix: p(n) eps sigma_1 apart (tests of vsfast.svd)
        np.testing.assert_allclose(np.asarray(sp.singular_values), ref, rtol=0, atol=10 * 75 * 2.2e-16 * ref[0])
        assert sp.rank == np.linalg.matrix_rank(jac)
        np.testing.assert_allclose(np.asarray(sp.signal_out) @ np.diag(np.asarray(sp.singular_values)[:sp.rank])
                                   @ np.asarray(sp.signal).T, jac, rtol=0, atol=1e-12 * ref[0])


def low_rank_map(n_in: int, n_out: int, rank: int, seed: int = 0):
    """x -> W2 tanh(W1 x): its Jacobian W2 diag(tanh') W1 has rank `rank` at every x."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(n_in, rank), torch.nn.Tanh(),
                               torch.nn.Linear(rank, n_out)).double()


def test_randomized_jacobian_spaces_recover_a_low_rank_jacobian():
    fn = low_rank_map(48, 40, rank=6)
    x = torch.randn(4, 3, 4, 4, dtype=torch.float64)  # inputs of shape (3, 4, 4): n = 48
    found, dense = jacobian_spaces(fn, x, k=8, method="randomized"), dense_jacobians(fn, x)
    for sp, jac in zip(found, dense):
        ref = np.linalg.svd(jac, compute_uv=False)
        assert sp.method == "randomized" and sp.rank == 6
        # a rank-6 matrix lies in a sketch of 18 columns exactly: the top 6 to rounding
        np.testing.assert_allclose(np.asarray(sp.singular_values)[:6], ref[:6], rtol=1e-10)
        u, _, vh = np.linalg.svd(jac)
        np.testing.assert_allclose(projector(sp.signal), vh[:6].T @ vh[:6], atol=1e-10)
        np.testing.assert_allclose(projector(sp.signal_out), u[:, :6] @ u[:, :6].T, atol=1e-10)


def test_randomized_jacobian_error_is_within_the_subspace_iteration_bound():
    # A full-rank Jacobian with a decaying spectrum: ||J - U S Vh||_2 <= 2 sigma_{k+1}, well
    # inside Halko, Martinsson & Tropp's bound for 10 extra columns and 2 power iterations.
    torch.manual_seed(1)
    a = torch.randn(60, 60, dtype=torch.float64)
    u, _, vh = torch.linalg.svd(a)
    w = u @ torch.diag(0.8 ** torch.arange(60, dtype=torch.float64)) @ vh
    fn = lambda z: torch.sin(z.flatten(1) @ w.T)  # noqa: E731
    x = torch.randn(2, 60, dtype=torch.float64)
    for sp, jac in zip(jacobian_spaces(fn, x, k=10, method="randomized"), dense_jacobians(fn, x)):
        s = np.asarray(sp.singular_values)
        approx = np.asarray(sp.signal_out) @ np.diag(s[:sp.rank]) @ np.asarray(sp.signal).T
        assert np.linalg.norm(jac - approx, 2) <= 2 * np.linalg.svd(jac, compute_uv=False)[10]


def test_jacobian_spaces_do_not_depend_on_the_batch():
    fn = low_rank_map(48, 40, rank=6)
    x = torch.randn(3, 48, dtype=torch.float64)
    together = jacobian_spaces(fn, x, k=8, method="randomized")
    alone = jacobian_spaces(fn, x[1:2], k=8, method="randomized")[0]
    s = np.asarray(alone.singular_values)  # the same sketch: equal to rounding, beyond the rank too
    np.testing.assert_allclose(np.asarray(together[1].singular_values), s, rtol=0, atol=1e-12 * s[0])


def test_jacobian_spaces_keep_the_input_kind_and_dtype():
    fn = low_rank_map(12, 5, rank=3).float()
    sp = jacobian_spaces(fn, torch.randn(2, 12), k=2, method="randomized")[0]
    assert isinstance(sp.signal, torch.Tensor) and sp.signal.dtype == torch.float32 and sp.signal.shape == (12, 2)


def test_jacobian_spaces_bad_input():
    fn = low_rank_map(12, 5, rank=3)
    with pytest.raises(ValueError, match="x: expected a torch tensor"):
        jacobian_spaces(fn, np.ones((2, 12)))
    with pytest.raises(ValueError, match="floating-point"):
        jacobian_spaces(fn, torch.ones(2, 12, dtype=torch.int64))
    with pytest.raises(ValueError, match="k:"):
        jacobian_spaces(fn, torch.ones(2, 12, dtype=torch.float64), k=6)
    with pytest.raises(ValueError, match="needs k"):
        jacobian_spaces(fn, torch.ones(2, 12, dtype=torch.float64), method="randomized")
    big = torch.nn.Flatten()  # the identity on 3000 values: a 3000 x 3000 Jacobian
    with pytest.raises(ValueError, match="give k for the matrix-free route"):
        jacobian_spaces(big, torch.ones(1, 3000, dtype=torch.float64))
