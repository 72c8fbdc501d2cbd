"""A MILP in row form (filled by the families) and as numpy arrays (sliced by pricing, read by the backends)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Matrix:
    """A MILP in row form, filled by the builder and read by every backend."""

    col_lb: list[float] = field(default_factory=list)
    col_ub: list[float] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    integer: list[bool] = field(default_factory=list)
    row_lb: list[float] = field(default_factory=list)
    row_ub: list[float] = field(default_factory=list)
    row_names: list[str] = field(default_factory=list)
    nz_row: list[int] = field(default_factory=list)
    nz_col: list[int] = field(default_factory=list)
    nz_val: list[float] = field(default_factory=list)
    offset: float = 0.0

    def var(self, lb: float, ub: float, cost: float, integer: bool) -> int:
        """Add one variable; its index."""
        self.col_lb.append(lb)
        self.col_ub.append(ub)
        self.cost.append(cost)
        self.integer.append(integer)
        return len(self.cost) - 1

    def vars(self, count: int, lb: float, ub: float) -> range:
        """Add ``count`` free-of-cost continuous variables; their indices."""
        start = len(self.cost)
        self.col_lb.extend([lb] * count)
        self.col_ub.extend([ub] * count)
        self.cost.extend([0.0] * count)
        self.integer.extend([False] * count)
        return range(start, start + count)

    def row(self, name: str, cols: Sequence[int], vals: Sequence[float], lb: float, ub: float) -> int:
        """Add the row lb ≤ Σ vals·x[cols] ≤ ub; its index."""
        r = len(self.row_lb)
        self.row_lb.append(lb)
        self.row_ub.append(ub)
        self.row_names.append(name)
        self.nz_row.extend([r] * len(cols))
        self.nz_col.extend(cols)
        self.nz_val.extend(vals)
        return r


@dataclass(frozen=True)
class Arrays:
    """The same MILP as numpy arrays, for slicing and for HiGHS."""

    col_lb: np.ndarray
    col_ub: np.ndarray
    cost: np.ndarray
    integer: np.ndarray
    row_lb: np.ndarray
    row_ub: np.ndarray
    nz_row: np.ndarray
    nz_col: np.ndarray
    nz_val: np.ndarray
    offset: float

    @staticmethod
    def of(m: Matrix | Arrays) -> Arrays:
        """The arrays of a model in either form."""
        if isinstance(m, Arrays):
            return m
        return Arrays(
            np.asarray(m.col_lb, dtype=float), np.asarray(m.col_ub, dtype=float), np.asarray(m.cost, dtype=float),
            np.asarray(m.integer, dtype=bool), np.asarray(m.row_lb, dtype=float), np.asarray(m.row_ub, dtype=float),
            np.asarray(m.nz_row, dtype=np.int64), np.asarray(m.nz_col, dtype=np.int64),
            np.asarray(m.nz_val, dtype=float), m.offset,
        )

    def matrix(self) -> Matrix:
        """Back to row form, for the backends that add variables one by one."""
        return Matrix(
            self.col_lb.tolist(), self.col_ub.tolist(), self.cost.tolist(), self.integer.tolist(),
            self.row_lb.tolist(), self.row_ub.tolist(), [""] * len(self.row_lb), self.nz_row.tolist(),
            self.nz_col.tolist(), self.nz_val.tolist(), self.offset,
        )


def as_matrix(model: Matrix | Arrays) -> Matrix:
    """The row form of a model in either form."""
    return model.matrix() if isinstance(model, Arrays) else model


def submatrix(a: Arrays, keep_col: np.ndarray, keep_row: np.ndarray, relax: bool) -> Arrays:
    """The model restricted to the kept variables and rows (integrality dropped when relax)."""
    cols = np.nonzero(keep_col)[0]
    rows = np.nonzero(keep_row)[0]
    cmap = np.full(len(keep_col), -1, dtype=np.int64)
    cmap[cols] = np.arange(len(cols))
    rmap = np.full(len(keep_row), -1, dtype=np.int64)
    rmap[rows] = np.arange(len(rows))
    sel = keep_col[a.nz_col] & keep_row[a.nz_row]
    return Arrays(
        a.col_lb[cols], a.col_ub[cols], a.cost[cols],
        np.zeros(len(cols), dtype=bool) if relax else a.integer[cols],
        a.row_lb[rows], a.row_ub[rows], rmap[a.nz_row[sel]], cmap[a.nz_col[sel]], a.nz_val[sel], a.offset,
    )
