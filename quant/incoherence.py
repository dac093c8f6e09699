"""QuIP's incoherence processing (Chee et al. 2023, Sec. 4, Alg. 1) and its exact undo.

Before rounding: (1) rescale input columns, s_j = (H_jj / ||W_:,j||^2)^(1/4), W <- W diag(s),
H <- diag(s)^-1 H diag(s)^-1 (after H /= max|H|); (2) H <- H n / tr(H) + 0.01 I, then random orthogonal
U (rows) and V (columns): W <- U W V^T, H <- V H V^T; (3) GPTQ's dead-input fix and damping
H += percdamp * mean(diag H) I. After rounding: W <- U^T W V, then W <- W diag(s)^-1.

Orthogonal families (ORTHOGONALS): 'butterfly' is what QuIP's code ran (two factors of independent
random orthogonal blocks, with random input and output permutations), 'kron' the QuIP paper's
description (Kronecker product of two random orthogonal matrices), 'hadamard' QuIP#'s randomized
Hadamard transform (Tseng et al. 2024, Sec. 3), with a small random orthogonal factor when n is not a
power of two.
"""
import math
from dataclasses import dataclass

import torch


def haar(n, gen):
    """Haar-random n x n orthogonal matrix (QR of a Gaussian with the sign of diag(R) fixed)."""
    Q, R = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return (Q * torch.sign(R.diagonal())[None, :]).contiguous()


def prime_factors(n):
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out + ([n] if n > 1 else [])


def butterfly_sizes(n):
    """n = a * b, alternating n's sorted prime factors between a and b (as QuIP's code splits them)."""
    pf = prime_factors(n)
    return math.prod(pf[0::2]), math.prod(pf[1::2])


def butterfly(n, gen):
    """P_out B2 B1 P_in: on the a x b grid of indices, B1 rotates each column by its own random
    orthogonal a x a block, B2 each row by its own b x b block; P_in, P_out random permutations."""
    a, b = butterfly_sizes(n)
    B1 = torch.stack([haar(a, gen) for _ in range(b)])  # one a x a block per grid column
    B2 = torch.stack([haar(b, gen) for _ in range(a)])  # one b x b block per grid row
    p_in, p_out = torch.randperm(n, generator=gen), torch.randperm(n, generator=gen)
    X = torch.eye(n, dtype=torch.float64)[p_in].reshape(a, b, n)
    X = torch.einsum("cij,jcn->icn", B1, X)
    X = torch.einsum("rij,rjn->rin", B2, X)
    return X.reshape(n, n)[p_out]


def closest_divisors(n):
    a = max(k for k in range(1, math.isqrt(n) + 1) if n % k == 0)
    return a, n // a


def kron(n, gen):
    a, b = closest_divisors(n)
    return torch.kron(haar(a, gen), haar(b, gen))


def sylvester(n):
    Hm = torch.ones(1, 1, dtype=torch.float64)
    while Hm.shape[0] < n:
        Hm = torch.cat([torch.cat([Hm, Hm], 1), torch.cat([Hm, -Hm], 1)], 0)
    return Hm / math.sqrt(n)


def hadamard(n, gen):
    """(Hadamard_{2^k} kron O_r) diag(random signs), n = 2^k r with r odd, O_r random orthogonal."""
    pow2 = n & -n
    r = n // pow2
    M = sylvester(pow2) if r == 1 else torch.kron(sylvester(pow2), haar(r, gen))
    signs = torch.randint(0, 2, (n,), generator=gen, dtype=torch.float64) * 2 - 1
    return M * signs[None, :]


ORTHOGONALS = {"butterfly": butterfly, "kron": kron, "hadamard": hadamard}


@dataclass
class IncoherenceState:
    """What `undo` needs: the column scales and the two orthogonal matrices (None when not used)."""
    scale: torch.Tensor = None
    U: torch.Tensor = None
    V: torch.Tensor = None


def rescale(W, H):
    """Step (1): balance W's column norms against H's diagonal."""
    H = H / H.abs().max()
    dH = H.diagonal().clamp(min=1e-8)
    dW = W.square().sum(dim=0).clamp(min=1e-8)
    s = (dH / dW).pow(0.25).clamp(min=1e-8)
    return W * s[None, :], H / s[None, :] / s[:, None], s


def rotate(W, H, kind, gen):
    """Step (2): trace-normalise H, add 0.01 I, and conjugate by random orthogonal U, V."""
    n = H.shape[0]
    H = H * (n / (torch.trace(H) + 1e-8)) + 1e-2 * torch.eye(n, dtype=H.dtype, device=H.device)
    U = ORTHOGONALS[kind](W.shape[0], gen).to(W.device, W.dtype)
    V = ORTHOGONALS[kind](n, gen).to(W.device, W.dtype)
    return U @ W @ V.T, V @ H.to(V.dtype) @ V.T, U, V


def damp(W, H, percdamp):
    """Step (3), GPTQ's: inputs that never fire get H_jj = 1 and zero weights; add percdamp * mean diag."""
    H, W = H.clone(), W.clone()
    dead = H.diagonal() == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H.diagonal().add_(percdamp * H.diagonal().mean())
    return W, H


def preprocess(W, H, rescale_cols=False, proj=None, percdamp=0.01, gen=None):
    """Return (W', H', state); `proj` is an ORTHOGONALS name or None. Work in float64."""
    W, H = W.to(torch.float64), H.to(torch.float64)
    state = IncoherenceState()
    if rescale_cols:
        W, H, state.scale = rescale(W, H)
    if proj is not None:
        W, H, state.U, state.V = rotate(W, H, proj, gen)
    W, H = damp(W, H, percdamp)
    return W, H, state


def undo(Q, state):
    """Map quantized weights from the processed space back: U^T Q V, then divide the column scales."""
    Q = Q.to(torch.float64)
    if state.U is not None:
        Q = state.U.T @ Q @ state.V
    if state.scale is not None:
        Q = Q / state.scale[None, :]
    return Q
