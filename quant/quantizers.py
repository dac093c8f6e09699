"""Uniform integer grids: weight w maps to code c = clamp(round(w / scale + zero), 0, 2^b - 1) and back
to the level scale * (c - zero).

'a' is GPTQ's per-row asymmetric min/max grid (optionally per group of columns); 'b' is QuIP's grid for
incoherence-processed weights: one scale s = 2.4 * RMS(W) for the whole matrix and levels spread evenly
over [-s, s] (QuIP, Sec. 4 and its code's `quantize_qfnb`).
"""
import torch


class Quantizer:
    """Per-(row, group) affine grid. `scale` and `zero` have shape (rows or 1, groups)."""

    def __init__(self, bits, groupsize=-1, clamp=True):
        self.bits = bits
        self.maxq = 2 ** bits - 1
        self.groupsize = groupsize
        self.clamp = clamp
        self.scale = self.zero = self.col_group = None

    # ---------------------------------------------------------------- fitting
    def _params(self, W):
        raise NotImplementedError

    def fit(self, W):
        """Fit every group on W (rows x columns)."""
        d = W.shape[1]
        size = d if self.groupsize <= 0 else self.groupsize
        self.col_group = torch.arange(d, device=W.device) // size
        pieces = [self._params(W[:, i:i + size]) for i in range(0, d, size)]
        self.scale = torch.cat([s for s, _ in pieces], dim=1)
        self.zero = torch.cat([z for _, z in pieces], dim=1)
        return self._cache()

    def fit_group(self, W_cols, group):
        """Refit one group from (updated) columns: GPTQ's per-group parameters."""
        self.scale[:, group:group + 1], self.zero[:, group:group + 1] = self._params(W_cols)
        self._cache()

    def _cache(self):
        # per-column parameters, one contiguous row per column: the rounding loops read one per step
        self.col_scale = self.scale[:, self.col_group].T.contiguous()
        self.col_inv = 1.0 / self.col_scale
        self.col_zero = self.zero[:, self.col_group].T.contiguous()
        self.col_offset = -self.col_zero * self.col_scale
        return self

    def permuted(self, perm):
        """A view of this quantizer whose column j is column perm[j] of the original."""
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view.col_group = self.col_group[perm]
        return view._cache()

    # ---------------------------------------------------------------- one column (rounding loops)
    def code(self, x, j):
        """Nearest code (clamped to the grid unless clamp=False) of column j's values x."""
        c = torch.addcmul(self.col_zero[j], x, self.col_inv[j]).round_()
        return c.clamp_(0, self.maxq) if self.clamp else c

    def level(self, c, j):
        return torch.addcmul(self.col_offset[j], c, self.col_scale[j])

    # ---------------------------------------------------------------- whole matrix
    def codes(self, W):
        c = torch.round(W / self.col_scale.T + self.col_zero.T)
        return c.clamp_(0, self.maxq) if self.clamp else c

    def levels(self, C):
        return self.col_scale.T * (C - self.col_zero.T)

    def clip(self, W):
        """W clamped to the grid's range, before rounding (what QuIP's code does before LDLQ)."""
        if not self.clamp:
            return W
        s, z = self.col_scale.T, self.col_zero.T
        return s * ((W / s + z).clamp(0, self.maxq) - z)


class MinMaxQuantizer(Quantizer):
    """'a': GPTQ's asymmetric per-row grid spanning [min(row, 0), max(row, 0)]."""

    def _params(self, W):
        zeros = torch.zeros(W.shape[0], dtype=W.dtype, device=W.device)
        lo = torch.minimum(W.min(dim=1).values, zeros)
        hi = torch.maximum(W.max(dim=1).values, zeros)
        flat = (lo == 0) & (hi == 0)
        lo[flat], hi[flat] = -1.0, 1.0
        scale = (hi - lo) / self.maxq
        zero = torch.round(-lo / scale)
        return scale[:, None], zero[:, None]


class RMSQuantizer(Quantizer):
    """'b': one scale s = 2.4 RMS(W) per matrix; levels s * (2c / maxq - 1), c = 0..maxq."""

    def __init__(self, bits, groupsize=-1, clamp=True):
        if groupsize > 0:
            raise ValueError("quantizer 'b' has one scale per matrix; it takes no groupsize")
        super().__init__(bits, -1, clamp)

    def _params(self, W):
        s = 2.4 * W.square().mean().sqrt() + 1e-16
        one = torch.ones(1, 1, dtype=W.dtype, device=W.device)
        return one * (2 * s / self.maxq), one * (self.maxq / 2)


QUANTIZERS = {"a": MinMaxQuantizer, "b": RMSQuantizer}
