"""A MILP in row form (filled by the families) and as numpy arrays (sliced by pricing, read by the backends).

The row form keeps its numbers in typed arrays (8 bytes a number, where a list of Python numbers takes 32 or
more), so a model's memory per variable stays small, and turning it into numpy arrays copies buffers."""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


def _floats() -> array[float]:
    return array("d")


def _ints() -> array[int]:
    return array("q")


def _flags() -> array[int]:
    return array("b")


@dataclass
class Matrix:
    """A MILP in row form, filled by the builder and read by every backend (``integer`` holds 0 or 1)."""

    col_lb: array[float] = field(default_factory=_floats)
    col_ub: array[float] = field(default_factory=_floats)
    cost: array[float] = field(default_factory=_floats)
    integer: array[int] = field(default_factory=_flags)
    row_lb: array[float] = field(default_factory=_floats)
    row_ub: array[float] = field(default_factory=_floats)
    row_names: list[str] = field(default_factory=list)
    nz_row: array[int] = field(default_factory=_ints)
    nz_col: array[int] = field(default_factory=_ints)
    nz_val: array[float] = field(default_factory=_floats)
    offset: float = 0.0

    def var(self, lb: float, ub: float, cost: float, integer: bool) -> int:
        """Add one variable; its index."""
        self.col_lb.append(lb)
        self.col_ub.append(ub)
        self.cost.append(cost)
        self.integer.append(int(integer))
        return len(self.cost) - 1

    def vars(self, count: int, lb: float, ub: float) -> range:
        """Add ``count`` free-of-cost continuous variables; their indices."""
        start = len(self.cost)
        self.col_lb.extend([lb] * count)
        self.col_ub.extend([ub] * count)
        self.cost.extend([0.0] * count)
        self.integer.extend([False] * count)
        return range(start, start + count)

    def row(self, name: str, cols: Sequence[int] | np.ndarray, vals: Sequence[float] | np.ndarray, lb: float,
            ub: float) -> int:
        """Add the row lb ≤ Σ vals·x[cols] ≤ ub; its index."""
        r = len(self.row_lb)
        self.row_lb.append(lb)
        self.row_ub.append(ub)
        self.row_names.append(name)
        self.nz_row.extend([r] * len(cols))
        if isinstance(cols, np.ndarray):  # numpy in, buffers copied
            self.nz_col.frombytes(cols.astype(np.int64, copy=False).tobytes())
            self.nz_val.frombytes(np.asarray(vals, dtype=np.float64).tobytes())
        else:
            self.nz_col.extend(cols)
            self.nz_val.extend(vals)  # the typed array takes each value as a C double (anything with __float__)
        return r

    def pair_rows(self, name: str, first: Sequence[int], second: int, vals: tuple[float, float], lb: float,
                  ub: float) -> range:
        """Add one row lb ≤ vals[0]·x[i] + vals[1]·x[second] ≤ ub for each i in ``first``, in order, all named
        ``name`` (e.g. link rows x[c,b] ≤ n[c]); their indices."""
        k = len(first)
        r = len(self.row_lb)
        self.row_lb.extend([lb] * k)
        self.row_ub.extend([ub] * k)
        self.row_names.extend([name] * k)
        self.nz_row.frombytes(np.repeat(np.arange(r, r + k, dtype=np.int64), 2).tobytes())
        cols = np.empty(2 * k, dtype=np.int64)
        cols[0::2] = np.asarray(first, dtype=np.int64)
        cols[1::2] = second
        self.nz_col.frombytes(cols.tobytes())
        self.nz_val.frombytes(np.tile(np.asarray(vals, dtype=np.float64), k).tobytes())
        return range(r, r + k)


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
            np.array(m.col_lb, dtype=float), np.array(m.col_ub, dtype=float), np.array(m.cost, dtype=float),
            np.array(m.integer, dtype=bool), np.array(m.row_lb, dtype=float), np.array(m.row_ub, dtype=float),
            np.array(m.nz_row, dtype=np.int64), np.array(m.nz_col, dtype=np.int64),
            np.array(m.nz_val, dtype=float), m.offset,
        )

    def matrix(self) -> Matrix:
        """Back to row form, for the backends that add variables one by one."""
        return Matrix(
            array("d", self.col_lb.astype(float).tobytes()), array("d", self.col_ub.astype(float).tobytes()),
            array("d", self.cost.astype(float).tobytes()), array("b", self.integer.astype(np.int8).tobytes()),
            array("d", self.row_lb.astype(float).tobytes()), array("d", self.row_ub.astype(float).tobytes()),
            [""] * len(self.row_lb), array("q", self.nz_row.astype(np.int64).tobytes()),
            array("q", self.nz_col.astype(np.int64).tobytes()), array("d", self.nz_val.astype(float).tobytes()),
            self.offset,
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
