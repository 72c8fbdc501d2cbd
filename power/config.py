"""The power domain file read by ``medley power run`` / ``plan``: a domain and the servers in it.

```yaml
domain: {id: row-a, budget_watts: 188000}        # planner.schema.PowerDomain
servers:                                          # optional for `plan`, needed by `run`
  - {node: gpu-node-001, device: a100-80gb, gpus: 8, priority: 0}
  - {node: gpu-node-002, device: h100-sxm, gpus: 8, priority: 1, overhead_watts: 2800}
```

A fleet file (with ``power_domains:``) is accepted too; ``--domain-id`` picks one of its domains.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from planner.catalog import Catalog, builtin_catalog
from planner.schema import PowerDomain
from power.policy import Gpu
from power.sim import ServerSpec, server_overhead_watts


class InputError(ValueError):
    """Bad input, as one line naming the field and the reason."""


class ServerEntry(BaseModel):
    """One server of a power domain."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: str = Field(min_length=1)
    device: str
    gpus: int = Field(default=8, ge=1)
    priority: int = Field(default=1, ge=0)
    overhead_watts: float | None = Field(default=None, ge=0)


class DomainFile(BaseModel):
    """A power domain with its servers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: PowerDomain
    servers: list[ServerEntry] = Field(default_factory=list)

    def server_specs(self, catalog: Catalog | None = None) -> list[ServerSpec]:
        """Servers with their catalog device types; unknown devices are input errors."""
        cat = catalog or builtin_catalog()
        out = []
        for i, s in enumerate(self.servers):
            if s.device not in cat.devices:
                raise InputError(f"servers.{i}.device: unknown device {s.device!r}")
            dev = cat.devices[s.device]
            overhead = s.overhead_watts if s.overhead_watts is not None else server_overhead_watts(dev)
            out.append(ServerSpec(s.node, dev, s.gpus, s.priority, overhead))
        return out

    def gpus(self, catalog: Catalog | None = None) -> list[Gpu]:
        """The policy's view of the servers: GPUs named ``node/index``."""
        return [Gpu(f"{s.node}/{i}", s.node, s.device, s.priority)
                for s in self.server_specs(catalog) for i in range(s.gpus)]


def _first_error(e: ValidationError, prefix: str = "") -> InputError:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    # Model validators name their field as "field: reason"; fold it into the location.
    m = re.match(r"^([a-z_][a-z0-9_]*): (.*)$", msg)
    if m:
        loc, msg = (f"{loc}.{m.group(1)}" if loc else m.group(1)), m.group(2)
    return InputError(f"{prefix}{loc or 'file'}: {msg}")


def load_domain_file(path: str | Path, domain_id: str | None = None) -> DomainFile:
    """Parse a domain file (or a fleet file's power domain); raises :class:`InputError`."""
    p = Path(path)
    try:
        raw: Any = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"domain: file {str(p)!r} not found") from None
    except yaml.YAMLError as e:
        raise InputError(f"domain: {p} is not YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise InputError("domain: the file must hold a mapping")
    if "power_domains" in raw:
        domains = raw.get("power_domains") or []
        if not isinstance(domains, list) or not domains:
            raise InputError("power_domains: must list at least one domain")
        chosen = next((d for d in domains if isinstance(d, dict) and d.get("id") == domain_id), None) \
            if domain_id else domains[0]
        if chosen is None:
            raise InputError(f"domain_id: no power domain {domain_id!r} in the file")
        raw = {"domain": chosen, "servers": raw.get("servers", [])}
    try:
        return DomainFile.model_validate(raw)
    except ValidationError as e:
        raise _first_error(e) from None
