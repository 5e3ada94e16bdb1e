"""The RabbitMQ management API (HTTP), for what AMQP cannot do: policies.

Queue arguments (`x-dead-letter-exchange`, `x-delivery-limit`) are fixed when a queue is
first declared: a broker whose `cajasync.requests` predates them keeps the queue as it
was, and declaring it again with other arguments fails (PRECONDITION_FAILED). A policy
changes a queue in place, on every broker, without re-declaring it; `cajasync server
init` applies ours through this API, which a remote operator reaches where
`rabbitmqctl set_policy` (a shell on the broker's host) is not available.

The credentials are those of the broker URL (the management API takes the same users);
the user needs the `policymaker` (or `administrator`) tag to set a policy.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit

from cajasync.core import topology
from cajasync.core.settings import Settings
from cajasync.errors import BrokerUnavailable

POLICY_NAME: Final = "cajasync-dead-letters"
POLICY_PRIORITY: Final = 10
# The server's queues, never `cajasync.dead` (listing it redelivers its messages) nor the
# terminals' queues (a till that crashes on a page five times would lose it to the dead
# queue; its consumer settles what it cannot read itself).
POLICY_PATTERN: Final = r"^cajasync\.(ops|requests)$"


def policy_definition() -> dict[str, Any]:
    """What the policy sets: a quorum queue takes both keys from a policy. Where a queue
    also has them as arguments (`cajasync.ops`, declared with both), they name the same
    values, so which one RabbitMQ prefers changes nothing."""
    return {
        "dead-letter-exchange": topology.DEAD_EXCHANGE,
        "delivery-limit": topology.DELIVERY_LIMIT,
    }


def vhost_of(settings: Settings) -> str:
    """The virtual host of the broker URL (`/` when it names none)."""
    path = urlsplit(settings.broker_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def call(settings: Settings, method: str, path: str, body: Any = None) -> Any:
    """One management API call (`path` under /api/); its JSON answer, or BrokerUnavailable
    naming the URL and what to do."""
    parts = urlsplit(settings.broker_url)
    user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
    url = f"{settings.management_url.rstrip('/')}/api/{path}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - configured
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            text = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:200]
        raise BrokerUnavailable(
            f"the RabbitMQ management API at {settings.management_url} answered {exc.code} "
            f"to {method} /api/{path}: {detail or exc.reason}"
            + (
                f"; user {user!r} needs the policymaker or administrator tag"
                if exc.code in (401, 403)
                else ""
            )
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise BrokerUnavailable(
            f"the RabbitMQ management API at {settings.management_url} is unreachable "
            f"({exc}); enable it (`rabbitmq-plugins enable rabbitmq_management`) and point "
            "CAJASYNC_MANAGEMENT_URL at it"
        ) from exc
    return json.loads(text) if text.strip() else None


def apply_policies(settings: Settings) -> dict[str, Any]:
    """Set (or update) the dead-letter policy on the broker URL's virtual host; return it."""
    vhost = quote(vhost_of(settings), safe="")
    policy = {
        "pattern": POLICY_PATTERN,
        "apply-to": "queues",
        "priority": POLICY_PRIORITY,
        "definition": policy_definition(),
    }
    call(settings, "PUT", f"policies/{vhost}/{quote(POLICY_NAME, safe='')}", policy)
    return policy


def effective_policy(settings: Settings, queue: str) -> dict[str, Any]:
    """The policy definition RabbitMQ applies to `queue` ({} when none)."""
    vhost = quote(vhost_of(settings), safe="")
    found = call(settings, "GET", f"queues/{vhost}/{quote(queue, safe='')}")
    definition = found.get("effective_policy_definition") if isinstance(found, dict) else None
    return definition if isinstance(definition, dict) else {}
