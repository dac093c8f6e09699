"""Hessian-vector products and the spectral tools built on them (in the manner of PyHessian).

Yao, Gholami, Keutzer, Mahoney (2020), "PyHessian: Neural Networks Through the Lens of the Hessian":
power iteration for the top eigenvalue, Lanczos for the top few, stochastic Lanczos quadrature (SLQ,
Golub & Meurant; Ubaru, Chen & Saad 2017) for the spectral density. Written anew on flat vectors: an
operator is any function v -> H v on a 1-D tensor of the parameters' total size.
"""
import math

import torch


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def unflat(vector, like):
    """Split a flat vector into tensors shaped like `like`."""
    out, start = [], 0
    for t in like:
        out.append(vector[start:start + t.numel()].view_as(t))
        start += t.numel()
    return out


def hessian_operator(params, batches, loss_of_batch):
    """v -> H v of the loss sum_b loss_of_batch(b), by double backward (Pearlmutter's trick).

    `batches` is an iterable that can be traversed repeatedly; `loss_of_batch(b)` returns that batch's
    (already weighted) contribution to the loss, so the total loss is the sum over batches.
    """
    params = [p for p in params if p.requires_grad]

    def matvec(vector):
        parts = unflat(vector.to(params[0].dtype), params)
        total = torch.zeros_like(vector)
        for batch in batches:
            grads = torch.autograd.grad(loss_of_batch(batch), params, create_graph=True)
            dot = sum((g * v).sum() for g, v in zip(grads, parts))
            total += flat(torch.autograd.grad(dot, params)).to(total.dtype)
        return total
    matvec.dim = sum(p.numel() for p in params)
    matvec.dtype = params[0].dtype
    return matvec


def explicit_hessian(matvec, dim, dtype=torch.float64):
    """The full dim x dim Hessian, one HVP per basis vector (only for small dim)."""
    eye = torch.eye(dim, dtype=dtype)
    cols = [matvec(eye[i]) for i in range(dim)]
    hess = torch.stack(cols, 1)
    return 0.5 * (hess + hess.T)


def power_iteration(matvec, dim, iters=100, tol=1e-6, seed=0, dtype=torch.float64):
    """Largest-magnitude eigenvalue (and vector) by power iteration; returns (eigenvalue, vector, steps)."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(dim, generator=gen, dtype=dtype)
    v /= v.norm()
    value = 0.0
    for step in range(1, iters + 1):
        w = matvec(v)
        new = (v @ w).item()
        v = w / w.norm().clamp_min(1e-300)
        if abs(new - value) <= tol * max(abs(new), 1e-30):
            return new, v, step
        value = new
    return value, v, iters


def lanczos(matvec, dim, steps, v0=None, seed=0, dtype=torch.float64):
    """Lanczos with full reorthogonalisation: returns (alpha, beta) of the tridiagonal T (len m, m-1)."""
    if v0 is None:
        v0 = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    steps = min(steps, dim)
    basis = [v0.to(dtype) / v0.norm()]
    alpha, beta = [], []
    for j in range(steps):
        w = matvec(basis[j]).to(dtype)
        alpha.append((basis[j] @ w).item())
        Q = torch.stack(basis, 1)
        w = w - Q @ (Q.T @ w)
        w = w - Q @ (Q.T @ w)  # twice is enough (Giraud et al. 2005)
        b = w.norm().item()
        if j == steps - 1 or b < 1e-10 * max(1.0, abs(alpha[-1])):
            break
        beta.append(b)
        basis.append(w / b)
    return torch.tensor(alpha, dtype=torch.float64), torch.tensor(beta, dtype=torch.float64)


def ritz(alpha, beta):
    """Eigenvalues (ascending) and eigenvectors of the Lanczos tridiagonal matrix."""
    T = torch.diag(alpha)
    if len(beta):
        T += torch.diag(beta, 1) + torch.diag(beta, -1)
    return torch.linalg.eigh(T)


def lanczos_top(matvec, dim, steps=80, top=5, seed=0, dtype=torch.float64):
    """The `top` largest Ritz values (descending) and the smallest one."""
    values, _ = ritz(*lanczos(matvec, dim, steps, seed=seed, dtype=dtype))
    return values.flip(0)[:top].tolist(), values[0].item()


def slq(matvec, dim, probes=3, steps=80, seed=0, dtype=torch.float64):
    """Stochastic Lanczos quadrature: Ritz nodes and weights (each probe's weights sum to 1/probes).

    With Rademacher probes v / ||v||, sum_j w_j f(theta_j) estimates tr f(H) / dim.
    """
    gen = torch.Generator().manual_seed(seed)
    nodes, weights = [], []
    for _ in range(probes):
        v = (torch.randint(0, 2, (dim,), generator=gen) * 2 - 1).to(dtype)
        values, vectors = ritz(*lanczos(matvec, dim, steps, v0=v, dtype=dtype))
        nodes.append(values)
        weights.append(vectors[0] ** 2 / probes)
    return torch.cat(nodes), torch.cat(weights)


def density(nodes, weights, grid, sigma):
    """Gaussian-smoothed spectral density on `grid` (integrates to ~1)."""
    diff = grid[:, None] - nodes[None, :]
    kern = torch.exp(-0.5 * (diff / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    return kern @ weights


def weighted_quantile(nodes, weights, q):
    """q-quantile of the discrete distribution sum_j w_j delta(theta_j)."""
    order = torch.argsort(nodes)
    cdf = torch.cumsum(weights[order], 0) / weights.sum()
    idx = int(torch.searchsorted(cdf, torch.tensor(q, dtype=cdf.dtype)).clamp(max=len(cdf) - 1))
    return nodes[order][idx].item()
