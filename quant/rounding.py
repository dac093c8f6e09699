"""Rounding methods: turn weights W (rows x columns) into integer codes given the proxy Hessian H.

Every method minimises (or, for nearest, ignores) the proxy loss tr((Q - W) H (Q - W)^T) and returns
integer-valued codes on the quantizer's grid; `quantizer.levels(codes)` gives the quantized weights.

- nearest: round every weight to the nearest level.
- gptq: GPTQ (Frantar et al. 2023, Alg. 1), lazy batches of `blocksize` columns.
- ldlq: LDLQ (QuIP, Chee et al. 2023, Sec. 3): columns in order, each rounded after adding the
  linear feedback of the earlier columns' errors through the unit-triangular LDL factor of H.
- ldlqRG: LDLQ with columns in descending diag(H) order, then `npasses` greedy coordinate-descent passes
  (QuIP's code, `round_sorted_ldlqRG`).
- allbal: greedy coordinate descent from the unrounded weights (QuIP's code, `round_allbal`).
"""
import torch

BLOCKSIZE = 128


def proxy_loss(W, Q, H):
    """tr((Q - W) H (Q - W)^T)."""
    D = (Q - W).to(H.dtype)
    return torch.einsum("ij,jk,ik->", D, H, D).item()


def ldl_feedback(H):
    """Strictly upper A with H = (I + A) D (I + A)^T: LDLQ's feedback when columns go first to last."""
    Hf = H.to(torch.float64).flip(0, 1)
    R = torch.linalg.cholesky(Hf).flip(0, 1)  # upper triangular, H = R R^T
    return R / R.diagonal()[None, :] - torch.eye(H.shape[0], dtype=R.dtype, device=R.device)


def nearest(W, H, quantizer, **_):
    return quantizer.codes(W)


def ldlq_core(W, H, quantizer, blocksize=BLOCKSIZE):
    """LDLQ, columns first to last. blocksize=None runs the unblocked loop (one GEMV per column).

    Internally columns are rows (W^T), so every per-column step reads contiguous memory.
    """
    A = ldl_feedback(H).to(W.dtype)
    WT = W.T.contiguous()
    if blocksize is None:
        return _ldlq_unblocked(WT, A, quantizer).T
    d, m = WT.shape
    T = WT.clone()  # targets: W plus the feedback received so far
    C = torch.empty_like(WT)
    for i1 in range(0, d, blocksize):
        i2 = min(i1 + blocksize, d)
        Tb, Ab = T[i1:i2], A[i1:i2, i1:i2]
        E = torch.empty(i2 - i1, m, dtype=W.dtype, device=W.device)
        for c in range(i2 - i1):
            j = i1 + c
            C[j] = quantizer.code(Tb[c], j)
            torch.sub(WT[j], quantizer.level(C[j], j), out=E[c])
            Tb[c + 1:].addr_(Ab[c, c + 1:], E[c])
        T[i2:].addmm_(A[i1:i2, i2:].T, E)  # one matrix product per block for the trailing columns
    return C.T


def _ldlq_unblocked(WT, A, quantizer):
    # the plain loop, one GEMV per column over the error rows kept so far (E[j] = W[j] - Q[j])
    C = torch.empty_like(WT)
    E = torch.empty_like(WT)
    for j in range(WT.shape[0]):
        target = WT[j] + A[:j, j] @ E[:j]
        C[j] = quantizer.code(target, j)
        torch.sub(WT[j], quantizer.level(C[j], j), out=E[j])
    return C


def gptq_core(W, H, quantizer, blocksize=BLOCKSIZE, groupsize=-1):
    """GPTQ: quantize column j, spread its error over later columns through chol(H^-1)."""
    WT = W.T.contiguous()
    d, m = WT.shape
    L = torch.linalg.cholesky(H.to(torch.float64))
    U = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True).to(W.dtype)
    C = torch.empty_like(WT)
    for i1 in range(0, d, blocksize):
        i2 = min(i1 + blocksize, d)
        Wb, Ub = WT[i1:i2], U[i1:i2, i1:i2]
        E = torch.empty(i2 - i1, m, dtype=W.dtype, device=W.device)
        for c in range(i2 - i1):
            j = i1 + c
            if groupsize > 0 and j % groupsize == 0:
                quantizer.fit_group(WT[j:j + groupsize].T, j // groupsize)  # Wb is a view of WT
            C[j] = quantizer.code(Wb[c], j)
            torch.sub(Wb[c], quantizer.level(C[j], j), out=E[c]).div_(Ub[c, c])
            Wb[c + 1:].addr_(Ub[c, c + 1:], E[c], alpha=-1)
        WT[i2:].addmm_(U[i1:i2, i2:].T, E, alpha=-1)
    return C.T


def greedy_passes(W, C, H, quantizer, npasses, blocksize=BLOCKSIZE):
    """Coordinate descent on the proxy loss: each code set to the best level given all others.

    Each step can only lower the proxy loss (the current level is among the candidates, and the best
    grid point of a 1-D convex quadratic is the clamped rounding of its minimiser). Stops early at a
    fixed point. C may hold NaN for 'not yet rounded' (allbal's start: Q = W there).
    """
    WT, CT = W.T.contiguous(), C.T.contiguous()
    d = WT.shape[0]
    QT = torch.where(torch.isnan(CT), WT, quantizer.levels(torch.nan_to_num(C)).T)
    ST = QT - WT
    Hw = H.to(W.dtype)
    diag = Hw.diagonal()
    for _ in range(npasses):
        changed = False
        for i1 in range(0, d, blocksize):
            i2 = min(i1 + blocksize, d)
            G = Hw[i1:i2] @ ST  # (H S^T) rows of this block, kept current by rank-1 updates
            for c in range(i2 - i1):
                j = i1 + c
                code = quantizer.code(QT[j] - G[c] / diag[j], j)
                if torch.equal(code, CT[j]):
                    continue
                changed = True
                delta = quantizer.level(code, j) - QT[j]
                CT[j] = code
                QT[j] += delta
                ST[j] += delta
                G[c + 1:].addr_(Hw[i1 + c + 1:i2, j], delta)
        if not changed:
            break
    return CT.T


def _permuted(fn):
    """Run fn on columns permuted by order(H), then put the codes back in the original order."""
    def run(W, H, quantizer, order, **opts):
        perm = order(H)
        C = fn(W[:, perm], H[perm][:, perm], quantizer.permuted(perm), **opts)
        out = torch.empty_like(C)
        out[:, perm] = C
        return out
    return run


def _ldlq_then_greedy(W, H, quantizer, npasses=0, blocksize=BLOCKSIZE):
    C = ldlq_core(W, H, quantizer, blocksize=blocksize)
    return greedy_passes(W, C, H, quantizer, npasses) if npasses > 0 else C


def _allbal(W, H, quantizer, npasses=1, **_):
    C = torch.full_like(W, float("nan"))
    return greedy_passes(W, C, H, quantizer, max(1, npasses))


def descending_diag(H):
    # QuIP's code sorts diag(H) ascending and rounds from the last column: largest diag(H) first.
    return torch.argsort(H.diagonal()).flip(0)


def reversed_columns(H):
    # QuIP's `round_ldl` (ldlq without sorting) rounds from the last column to the first.
    return torch.arange(H.shape[0] - 1, -1, -1, device=H.device)


def ldlq(W, H, quantizer, npasses=0, blocksize=BLOCKSIZE, **_):
    return _permuted(_ldlq_then_greedy)(W, H, quantizer, reversed_columns, npasses=npasses,
                                        blocksize=blocksize)


def ldlqRG(W, H, quantizer, npasses=0, blocksize=BLOCKSIZE, **_):  # noqa: N802 (the CLI name)
    return _permuted(_ldlq_then_greedy)(W, H, quantizer, descending_diag, npasses=npasses,
                                        blocksize=blocksize)


def allbal(W, H, quantizer, npasses=1, **_):
    return _permuted(_allbal)(W, H, quantizer, descending_diag, npasses=npasses)


def gptq(W, H, quantizer, blocksize=BLOCKSIZE, groupsize=-1, **_):
    return gptq_core(W, H, quantizer, blocksize=blocksize, groupsize=groupsize)


# CLI name -> (codes = fn(W, H, quantizer, npasses=, blocksize=, groupsize=), clip W to the grid first)
ROUNDERS = {
    "nearest": (nearest, False),
    "gptq": (gptq, False),
    "ldlq": (ldlq, True),
    "ldlqRG": (ldlqRG, True),
    "allbal": (allbal, True),
}


def round_weights(method, W, H, quantizer, npasses=0, blocksize=BLOCKSIZE, groupsize=-1):
    """Codes for W with `method`; the quantizer must already be fitted (GPTQ refits groups itself)."""
    fn, clip_first = ROUNDERS[method]
    if clip_first:
        W = quantizer.clip(W)
    return fn(W, H, quantizer, npasses=npasses, blocksize=blocksize, groupsize=groupsize)
