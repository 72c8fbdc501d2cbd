"""Label and annotation keys Medley puts on what it renders (selectors are built from these only), and names."""

import hashlib
import re

MANAGED_BY = "app.kubernetes.io/managed-by"
MEDLEY = "medley"
SERVICE_LABEL = "medley.dev/service"
PLAN_LABEL = "medley.dev/plan"
FLEET_LABEL = "medley.dev/fleet"
GROUP_LABEL = "medley.dev/group"
SHARD_LABEL = "medley.dev/shard"
ROLE_LABEL = "medley.dev/role"
COMPONENT_LABEL = "medley.dev/component"  # engine | worker | attention | router
SERVING_LABEL = "medley.dev/serving"  # "true" on pods that answer requests (never workers or attention)
PREFILL_LABEL = "medley.dev/prefill"  # "true" on serving pods that run prompts
DECODE_LABEL = "medley.dev/decode"  # "true" on serving pods that produce tokens
CAPACITY_ANNOTATION = "medley.dev/capacity-rps-per-replica"
REQUIRED_ANNOTATION = "medley.dev/required-rps"
CONFIGURATION_ANNOTATION = "medley.dev/configuration"
TRUE = "true"


def dns_label(text: str, limit: int = 63) -> str:
    """A DNS-1035 label from ``text``: lower-case, ``-`` for others, starts with a letter, hashed if long."""
    clean = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "x"
    if not clean[0].isalpha():
        clean = "m-" + clean
    if len(clean) > limit:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        clean = clean[: limit - 9].rstrip("-") + "-" + digest
    return clean


def label_value(text: str) -> str:
    """A valid label value (63 characters of ``[A-Za-z0-9._-]``, alphanumeric at both ends)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")
    if len(clean) > 63:
        clean = clean[:54].rstrip("-._") + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return clean
