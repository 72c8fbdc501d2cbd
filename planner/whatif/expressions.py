"""What-if expressions: the syntax of one change to a fleet, and of a sweep over a change's value.

Each expression names one change::

    rate*=2                       every service's request rate doubles (also ``=``, ``+=``)
    rate[chat]=10                 one service's rate
    price[h100-sxm]=2.5           $/device-hour of every pool of a device type (or ``price[POOL]``)
    remove-pool=h100-a            a pool is lost (``remove-zone=zone-b`` loses every pool in a zone)
    pool[h20-a].max_nodes=16      a pool field: max_nodes, devices_per_node, price_usd_per_device_hour,
                                  node_overhead_watts
    slo[chat].tpot_ms=50          an SLO field: ttft_ms, tpot_ms, percentile (``slo.tpot_ms`` for all)
    power[row-a].budget_watts=4e4 a power domain field: budget_watts, oversubscription_ratio
    add-service=svc.yaml          a service (mapping) or services (list) from a file; ``add-model=`` and
                                  ``add-pool=`` alike (an existing id is replaced)
    remove-service=code
    commit=40                     the fleet's savings-plan commitment, $/h (planner.commitment_usd_per_hour)
    spot_share=0.5                the largest share of every service's devices on spot pools (0 forbids spot;
                                  ``spot_share[chat]`` for one service)

Parsing is syntax only (:func:`parse_expression`); ``planner.whatif.changes`` checks names against a fleet. A
sweep puts a range where the value goes: ``rate=1..64x2`` (geometric), ``slo[chat].tpot_ms=40..120+20``
(arithmetic), ``rate*=1,2,3`` (a list).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import yaml
from pydantic import Field

from planner.schema import Value

Op = Literal["=", "*=", "+="]
ChangeKind = Literal["rate", "price", "pool", "slo", "power", "remove-pool", "remove-zone", "remove-service",
                     "add-service", "add-model", "add-pool", "commit", "spot_share"]

POOL_FIELDS = ("max_nodes", "devices_per_node", "price_usd_per_device_hour", "node_overhead_watts")
SLO_FIELDS = ("ttft_ms", "tpot_ms", "percentile")
POWER_FIELDS = ("budget_watts", "oversubscription_ratio")
_MAX_SWEEP_POINTS = 200

# Reads a file named in an expression (add-service=FILE); injected so the core does no I/O of its own.
Reader = Callable[[str], Any]


class ScenarioError(ValueError):
    """An expression that cannot be used: the expression, the offending part (start, end) and why."""

    def __init__(self, expr: str, reason: str, start: int = 0, end: int | None = None, where: str = "") -> None:
        self.expr = expr
        self.reason = reason
        self.start = start
        self.end = len(expr) if end is None else end
        self.where = where
        super().__init__(self.line())

    def line(self) -> str:
        """One line: ``WHERE 'EXPR': reason``."""
        prefix = f"{self.where} " if self.where else ""
        return f"{prefix}{self.expr!r}: {self.reason}"

    def caret(self) -> str:
        """The expression with a caret line under the offending part."""
        width = max(self.end - self.start, 1)
        return f"{self.expr}\n{' ' * self.start}{'^' * width}"

    def located(self, where: str) -> ScenarioError:
        """The same error, said to come from ``where`` (a flag or a file position)."""
        return ScenarioError(self.expr, self.reason, self.start, self.end, where)


class Change(Value):
    """One parsed expression: what it changes, how, and where its parts stand in the text."""

    text: str
    kind: ChangeKind
    target: str | None = None  # the id in brackets, or the id after remove-…=
    field: str | None = None
    op: Op = "="
    value: float | None = None
    document: Any = None  # the loaded file of add-service / add-model
    target_span: tuple[int, int] = (0, 0)
    value_span: tuple[int, int] = (0, 0)


# ---------------------------------------------------------------------------------------------- parsing

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_EXPR_RE = re.compile(
    r"^\s*(?P<head>[a-z][a-z_-]*)(?:\[(?P<target>[^\]]*)\])?(?:\.(?P<field>[a-z_]+))?\s*"
    r"(?P<op>\*=|\+=|=)\s*(?P<value>.*?)\s*$")
_HEADS = ("rate", "price", "pool", "slo", "power", "remove-pool", "remove-zone", "remove-service", "add-service",
          "add-model", "add-pool", "commit", "spot_share")


def split_expressions(text: str) -> list[str]:
    """``a; b`` → ``['a', 'b']`` (empty parts dropped)."""
    return [p.strip() for p in text.split(";") if p.strip()]


def parse_expression(expr: str, read: Reader | None = None) -> Change:
    """Parse one expression (syntax only); ``read`` loads the files add-service/add-model name."""
    m = _EXPR_RE.match(expr)
    if not m:
        raise ScenarioError(expr, "expected NAME[ID].FIELD OP VALUE with OP one of =, *=, += "
                                  "(e.g. rate[chat]*=2, price[h100-sxm]=2.5)")
    head = m.group("head")
    if head not in _HEADS:
        raise ScenarioError(expr, f"unknown change {head!r}" + did_you_mean(head, _HEADS) + "; known: "
                            + ", ".join(_HEADS), *m.span("head"))
    target = m.group("target")
    field = m.group("field")
    op: Op = m.group("op")  # type: ignore[assignment]  # the regex allows only these three
    raw = m.group("value")
    vspan = m.span("value")
    tspan = m.span("target") if target is not None else m.span("head")
    if head in ("remove-pool", "remove-zone", "remove-service", "add-service", "add-model", "add-pool"):
        if target is not None or field is not None or op != "=":
            raise ScenarioError(expr, f"write {head}=ID", m.start("head"), m.start("value"))
        if not raw:
            raise ScenarioError(expr, f"{head} needs a value", *vspan)
        if head.startswith("add-"):
            if read is None:
                raise ScenarioError(expr, "files cannot be read here; send the document itself", *vspan)
            try:
                doc = read(raw)
            except (OSError, yaml.YAMLError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
                raise ScenarioError(expr, f"cannot read {raw}: {reason}", *vspan) from None
            return Change(text=expr, kind=head, target=raw, document=doc, target_span=vspan,
                          value_span=vspan)
        return Change(text=expr, kind=head, target=raw, target_span=vspan, value_span=vspan)
    fields = {"rate": (), "price": (), "pool": POOL_FIELDS, "slo": SLO_FIELDS, "power": POWER_FIELDS, "commit": (),
              "spot_share": ()}[head]
    if head == "commit" and target is not None:
        raise ScenarioError(expr, "commit is the fleet's: write commit=USD_PER_HOUR", *m.span("target"))
    if head in ("rate", "price", "commit", "spot_share"):
        if field is not None:
            raise ScenarioError(expr, f"{head} takes no field: write {head}[ID]{op}VALUE", *m.span("field"))
    else:
        if field is None:
            raise ScenarioError(expr, f"{head} needs a field: {head}[ID].FIELD (one of {', '.join(fields)})",
                                m.end("head"), m.start("op"))
        if field not in fields:
            raise ScenarioError(expr, f"unknown {head} field {field!r}" + did_you_mean(field, fields)
                                + f"; known: {', '.join(fields)}", *m.span("field"))
    if head in ("pool", "power") and not target:
        raise ScenarioError(expr, f"{head} needs an id: {head}[ID].{field}", m.end("head"), m.start("op"))
    if target is not None and not target:
        raise ScenarioError(expr, "empty id in brackets", *m.span("target"))
    value = _number(expr, raw, vspan)
    return Change(text=expr, kind=head, target=target, field=field, op=op, value=value,
                  target_span=tspan, value_span=vspan)


def _number(expr: str, raw: str, span: tuple[int, int]) -> float:
    if not re.fullmatch(_NUM, raw):
        what = "a value is missing" if not raw else f"expected a number, got {raw!r}"
        if raw and re.search(r"\.\.|,", raw):
            what += " (ranges belong in --sweep)"
        raise ScenarioError(expr, what, *span)
    v = float(raw)
    if not math.isfinite(v):
        raise ScenarioError(expr, "the value must be finite", *span)
    return v


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'chat'?)`` for the closest of ``known``, or ''."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_scenario(exprs: Sequence[str], read: Reader | None = None) -> list[Change]:
    """Parse a scenario's expressions (each may hold several joined by ``;``)."""
    return [parse_expression(e, read) for text in exprs for e in split_expressions(text)]


# ---------------------------------------------------------------------------------------------- sweeps


class Sweep(Value):
    """An expression with a range where its value goes: the values to try, in order."""

    text: str
    prefix: str  # the expression up to and including its operator
    values: list[float] = Field(min_length=1)
    geometric: bool = False

    def expression(self, value: float) -> str:
        """The expression for one point of the sweep."""
        return f"{self.prefix}{value:g}"

    @property
    def label(self) -> str:
        """The swept quantity, as written (``rate``, ``slo[chat].tpot_ms``)."""
        return re.sub(r"\s*(\*=|\+=|=)\s*$", "", self.prefix) + (" ×" if self.prefix.rstrip().endswith("*=") else "")


_RANGE_RE = re.compile(rf"^(?P<lo>{_NUM})\.\.(?P<hi>{_NUM})(?P<kind>[x+])(?P<step>{_NUM})$")


def parse_sweep(text: str) -> Sweep:
    """``rate=1..64x2`` (geometric), ``slo[chat].tpot_ms=40..120+20`` (arithmetic), ``rate*=1,2,4`` (list)."""
    m = re.match(r"^(?P<prefix>.*?(?:\*=|\+=|=))\s*(?P<range>.*?)\s*$", text)
    if not m:
        raise ScenarioError(text, "expected EXPR=LO..HIxFACTOR, EXPR=LO..HI+STEP or EXPR=A,B,C")
    prefix, raw = m.group("prefix"), m.group("range")
    rspan = m.span("range")
    try:
        parse_expression(prefix + "1")  # the part before the range must be a valid expression
    except ScenarioError as exc:
        raise ScenarioError(text, exc.reason, min(exc.start, len(prefix)), min(exc.end, len(prefix))) from None
    r = _RANGE_RE.match(raw)
    geometric = False
    if r:
        lo, hi, step = float(r.group("lo")), float(r.group("hi")), float(r.group("step"))
        geometric = r.group("kind") == "x"
        if hi < lo:
            raise ScenarioError(text, f"the range runs backwards ({lo:g} > {hi:g})", *rspan)
        if geometric and (step <= 1 or lo <= 0):
            raise ScenarioError(text, "a geometric range needs LO > 0 and a factor above 1", *rspan)
        if not geometric and step <= 0:
            raise ScenarioError(text, "an arithmetic range needs a step above 0", *rspan)
        values: list[float] = []
        v = lo
        # A small tolerance so 0.1-steps reach their end point despite rounding.
        while v <= hi * (1 + 1e-9) + 1e-12 and len(values) <= _MAX_SWEEP_POINTS:
            values.append(round(v, 10))
            v = v * step if geometric else lo + len(values) * step
    elif re.fullmatch(rf"{_NUM}(?:\s*,\s*{_NUM})*", raw):
        values = [float(x) for x in raw.split(",")]
    else:
        raise ScenarioError(text, f"expected a range LO..HIxFACTOR, LO..HI+STEP or a list A,B,C, got {raw!r}",
                            *rspan)
    if len(values) > _MAX_SWEEP_POINTS:
        raise ScenarioError(text, f"more than {_MAX_SWEEP_POINTS} points; widen the step", *rspan)
    return Sweep(text=text, prefix=prefix, values=values, geometric=geometric)

