"""Planning in worker processes with a hard wall-clock and memory limit that really end the work.

A thread cannot be stopped, so a planner that overruns its limit in a thread keeps its CPU until it returns.
Here every call runs in a process of its own, started from a forkserver that imported the planner once (so
a call costs a fork, not an import); the child lowers ``RLIMIT_AS`` to ``memory_bytes`` before it plans,
the parent waits at most the limit and then kills the child (``SIGKILL``) and reaps it, so no CPU or memory
outlives the limit. Candidate generation runs in the child too, inside the limit. The answer comes back
over a pipe: the plan as JSON, or the planner's refusal (an infeasible fleet with its findings, an invalid
one with its message), or why the child died (out of memory, killed).
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import resource
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from pydantic import ValidationError

from planner.schema import FleetSpec, Plan

DEFAULT_FUNCTION = "planner.pipeline:plan_fleet"
# Imported once in the forkserver, so a worker costs a fork; a module that cannot be imported is skipped.
PRELOAD = ["planner.pipeline", "api.isolation", "highspy"]


class TimeLimitExceeded(Exception):
    """The planner did not return within the time limit (its process was killed)."""


class PlannerFailure(Exception):
    """The planner refused the fleet: infeasible (with findings) or invalid."""

    def __init__(self, message: str, findings: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.message = message
        self.findings = findings


def _resolve(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(":")
    fn: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return fn


def _child(conn: Connection, function: str, fleet_json: str, current_json: str | None, memory_bytes: int) -> None:
    """The worker: limit memory, plan, send ``(kind, payload)`` back."""
    try:
        if memory_bytes > 0:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        fleet = FleetSpec.model_validate_json(fleet_json)
        current = Plan.model_validate_json(current_json) if current_json else None
        plan = _resolve(function)(fleet, current=current)
        conn.send(("plan", plan.model_dump_json()))
    except MemoryError:
        conn.send(("memory", f"the planner ran out of its {memory_bytes >> 20} MiB of memory"))
    except (ImportError, OSError) as exc:
        if memory_bytes > 0 and ("map" in str(exc) or "memory" in str(exc).lower()):
            conn.send(("memory", f"the planner ran out of its {memory_bytes >> 20} MiB of memory ({exc})"))
        else:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    except ValidationError as exc:
        conn.send(("invalid", f"invalid fleet: {exc.error_count()} error(s): {exc.errors()[0]['msg']}"))
    except (ValueError, KeyError, OverflowError, ZeroDivisionError) as exc:
        conn.send(("invalid", f"invalid fleet: {exc}"))
    except Exception as exc:  # noqa: BLE001 - carried to the parent, which decides
        findings = getattr(exc, "findings", None)
        if findings is not None:
            dumped = [f.model_dump(mode="json") if hasattr(f, "model_dump") else dict(f) for f in findings]
            conn.send(("infeasible", str(exc), dumped))
        else:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


_context_lock = threading.Lock()
_context: Any = None


def _forkserver() -> Any:
    """The multiprocessing context: a forkserver with the planner imported (spawn where there is none)."""
    global _context
    with _context_lock:
        if _context is None:
            methods = multiprocessing.get_all_start_methods()
            ctx: Any
            if "forkserver" in methods:
                ctx = multiprocessing.get_context("forkserver")
                ctx.set_forkserver_preload(PRELOAD)
            else:
                ctx = multiprocessing.get_context("spawn")
            _context = ctx
        return _context


@dataclass
class Outcome:
    """What one isolated call did: its answer and the worker it ran in (for tests and metrics)."""

    pid: int
    exit_code: int | None


class IsolatedPlanner:
    """``Planner`` whose calls run in killable worker processes (module docstring).

    ``function`` is ``module:name`` of a planner with the ``Planner`` signature; ``memory_bytes`` caps each
    worker's address space (0: no cap); ``default_limit_s`` bounds calls made through ``__call__``.
    """

    def __init__(self, *, memory_bytes: int = 4 << 30, function: str = DEFAULT_FUNCTION,
                 default_limit_s: float = 600.0) -> None:
        self.memory_bytes = memory_bytes
        self.function = function
        self.default_limit_s = default_limit_s
        self.last: Outcome | None = None  # the most recent worker, set when it starts (tests read its pid)
        self.started = threading.Event()  # set when a worker has started (tests wait on it)

    def __call__(self, fleet: FleetSpec, *, current: Plan | None = None) -> Plan:
        """Plan in a worker under ``default_limit_s``."""
        return self.run(fleet, current, self.default_limit_s)

    def run(self, fleet: FleetSpec, current: Plan | None, limit_s: float) -> Plan:
        """Plan in a worker; kill it at ``limit_s`` (:class:`TimeLimitExceeded`); refusals as PlannerFailure."""
        ctx = _forkserver()
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, name="medley-planner", daemon=True,
                           args=(child, self.function, fleet.model_dump_json(by_alias=True),
                                 current.model_dump_json() if current is not None else None, self.memory_bytes))
        proc.start()
        child.close()
        self.last = Outcome(pid=proc.pid or 0, exit_code=None)
        self.started.set()
        try:
            answered = parent.poll(limit_s)
            message = parent.recv() if answered else None
        except EOFError:
            message = None
            answered = True
        finally:
            if proc.is_alive():
                proc.kill()
            proc.join(5)
            parent.close()
            self.last = Outcome(pid=proc.pid or 0, exit_code=proc.exitcode)
        if not answered:
            raise TimeLimitExceeded(f"the planner did not finish within {limit_s:g} s (its process was stopped)")
        return _answer(message, proc.exitcode, self.memory_bytes)


def _answer(message: Any, exit_code: int | None, memory_bytes: int) -> Plan:
    if message is None:
        why = "killed" if exit_code is not None and exit_code < 0 else f"exit code {exit_code}"
        if exit_code == -signal.SIGKILL and memory_bytes > 0:
            why += " (out of memory?)"
        raise PlannerFailure(f"the planner process ended without an answer ({why})", [])
    kind = message[0]
    if kind == "plan":
        return Plan.model_validate_json(message[1])
    if kind == "infeasible":
        raise PlannerFailure(f"infeasible: {message[1]}", message[2])
    if kind in ("invalid", "memory"):
        raise PlannerFailure(message[1], [])
    raise RuntimeError(f"the planner failed: {message[1]}")


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds a live process has used (Linux /proc), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] == "Z":
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
