"""The RabbitMQ management HTTP API, for what AMQP cannot do: broker users of terminals,
their permissions and connections, and policies (the plugin `.ci/services` and
compose.yaml enable; Settings.management_url).

Each terminal gets a broker user named after its id (RabbitMQ checks a message's `user_id`
against it, so the server knows which till really sent it), allowed to:

* configure and read only its own queue `cajasync.t.<terminal>` (declare, consume), never
  bind it: binding needs read on `cajasync.down`, which it lacks, so only the server (the
  registry) decides which change scopes reach a till;
* read the streams of its shared scopes, `cajasync.s.all` and `cajasync.s.loc.<location>`
  of its registered location (a move grants the new one and takes the old one away);
* write only to `cajasync.up`, and there (topic permissions) only routing keys
  `op.<terminal>.<topic>` and `req.<terminal>.<kind>`;
* answers come back by `t.<terminal>` into its queue, or by direct reply-to
  (`amq.rabbitmq.reply-to`, which needs no permission).

Policies: queue arguments (`x-dead-letter-exchange`, `x-delivery-limit`) are fixed when a
queue is first declared, so a broker whose `cajasync.requests` predates them keeps the
queue as it was. A policy changes a queue in place without re-declaring it; `cajasync
server init` applies ours through this API, which a remote operator reaches where
`rabbitmqctl set_policy` (a shell on the broker's host) is not.

The API is called with the credentials of the server's broker URL (an administrator; a
policy needs at least the `policymaker` tag).
urllib errors stop here: callers see BrokerUnavailable naming the API and what to do.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from cajasync.core.settings import Settings, first_url, url_list
from cajasync.core.topology import (
    DEAD_EXCHANGE,
    DELIVERY_LIMIT,
    UP_EXCHANGE,
    terminal_queue,
    terminal_streams,
)
from cajasync.errors import BrokerUnavailable, ConfigError

TIMEOUT_S: Final = 10.0
POLICY_NAME: Final = "cajasync-dead-letters"
POLICY_PRIORITY: Final = 10
# The server's queues, never `cajasync.dead` (listing it redelivers its messages) nor the
# terminals' queues (a till that crashes on a page five times would lose it to the dead
# queue; its consumer settles what it cannot read itself).
POLICY_PATTERN: Final = r"^cajasync\.(ops|requests)$"
HOW_TO_ENABLE = (
    "enable it with `rabbitmq-plugins enable rabbitmq_management` (compose.yaml and "
    ".ci/services do) or point CAJASYNC_MANAGEMENT_URL at it"
)


@dataclass(frozen=True, slots=True)
class Permissions:
    """What one terminal's broker user may do (regular expressions, RabbitMQ syntax)."""

    configure: str
    write: str
    read: str
    topic_write: str  # routing keys it may publish to `cajasync.up`
    topic_read: str


def terminal_permissions(terminal: str, location: str) -> Permissions:
    """Its own queue, the streams of its location, `cajasync.up` with its own routing keys,
    nothing else."""
    queue = re.escape(terminal_queue(terminal))
    own = re.escape(terminal)
    readable = "|".join([queue, *(re.escape(s) for s in terminal_streams(location))])
    return Permissions(
        configure=f"^{queue}$",
        write=f"^{re.escape(UP_EXCHANGE)}$",
        read=f"^({readable})$",
        topic_write=rf"^(op|req)\.{own}\.[^.]+$",
        topic_read="^$",
    )


def vhost_of(broker_url: str) -> str:
    """The virtual host of a broker URL, the first of a list (`/` when it names none)."""
    path = urlsplit(first_url(broker_url)).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def terminal_url(broker_url: str, terminal: str, password: str) -> str:
    """The broker URL a till uses: the server's host, port, vhost and query (TLS), with the
    terminal's own user and password; for a cluster's list, one such URL per node."""
    return ",".join(_with_user(one, terminal, password) for one in url_list(broker_url))


def _with_user(broker_url: str, terminal: str, password: str) -> str:
    parts = urlsplit(broker_url)
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{quote(terminal, safe='')}:{quote(password, safe='')}@{host}{port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/%2F", parts.query, ""))


class Management:
    """The management API at `settings.management_url`, as the broker URL's user."""

    def __init__(self, settings: Settings) -> None:
        # one per node of a cluster: a request goes to the first that answers
        self.bases = [url.rstrip("/") for url in url_list(settings.management_url)]
        self.base = self.bases[0]
        self.vhost = vhost_of(settings.broker_url)
        parts = urlsplit(first_url(settings.broker_url))
        user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    # -- users ---------------------------------------------------------------------------

    def user_exists(self, user: str) -> bool:
        return self._call("GET", f"/api/users/{_q(user)}", missing_ok=True) is not None

    def user_vhosts(self, user: str) -> list[str]:
        """The virtual hosts where `user` has permissions."""
        rows = self._call("GET", f"/api/users/{_q(user)}/permissions", missing_ok=True) or []
        return [str(row["vhost"]) for row in rows]

    def put_user(self, user: str, password: str) -> None:
        """Create `user` (no tags: it cannot log into the management UI) or set its password."""
        self._call("PUT", f"/api/users/{_q(user)}", {"password": password, "tags": ""})

    def delete_user(self, user: str) -> None:
        """Delete `user` (nothing when it is already gone)."""
        self._call("DELETE", f"/api/users/{_q(user)}", missing_ok=True)

    def grant(self, user: str, permissions: Permissions) -> None:
        """Set `user`'s permissions on this vhost, and its topic permissions on cajasync.up."""
        where = f"{_q(self.vhost)}/{_q(user)}"
        self._call(
            "PUT",
            f"/api/permissions/{where}",
            {
                "configure": permissions.configure,
                "write": permissions.write,
                "read": permissions.read,
            },
        )
        self._call(
            "PUT",
            f"/api/topic-permissions/{where}",
            {
                "exchange": UP_EXCHANGE,
                "write": permissions.topic_write,
                "read": permissions.topic_read,
            },
        )

    # -- queues --------------------------------------------------------------------------

    def queue_names(self, prefix: str) -> list[str]:
        """The names of this vhost's queues that start with `prefix`."""
        rows = self._call("GET", f"/api/queues/{_q(self.vhost)}?columns=name") or []
        return sorted(str(row["name"]) for row in rows if str(row["name"]).startswith(prefix))

    def bound_keys(self, queue: str, exchange: str) -> list[str]:
        """Routing keys `queue` is bound to `exchange` by (empty when the queue is missing)."""
        path = f"/api/queues/{_q(self.vhost)}/{_q(queue)}/bindings"
        rows = self._call("GET", path, missing_ok=True) or []
        return [str(row["routing_key"]) for row in rows if row.get("source") == exchange]

    def exchange_arguments(self, exchange: str) -> dict[str, Any]:
        """The arguments `exchange` was declared with (empty when it is missing)."""
        path = f"/api/exchanges/{_q(self.vhost)}/{_q(exchange)}"
        found = self._call("GET", path, missing_ok=True) or {}
        return dict(found.get("arguments") or {})

    # -- connections ---------------------------------------------------------------------

    def close_connections(self, user: str, reason: str) -> int:
        """Close every connection of `user` on this vhost; how many there were."""
        rows = self._call("GET", f"/api/vhosts/{_q(self.vhost)}/connections") or []
        closed = 0
        for row in rows:
            if row.get("user") != user:
                continue
            self._call(
                "DELETE",
                f"/api/connections/{_q(str(row['name']))}",
                headers={"X-Reason": reason},
                missing_ok=True,
            )
            closed += 1
        return closed

    # -- policies ------------------------------------------------------------------------

    def apply_policies(self) -> dict[str, Any]:
        """Set (or update) the dead-letter policy on this virtual host; return it."""
        policy = {
            "pattern": POLICY_PATTERN,
            "apply-to": "queues",
            "priority": POLICY_PRIORITY,
            "definition": policy_definition(),
        }
        self._call("PUT", f"/api/policies/{_q(self.vhost)}/{_q(POLICY_NAME)}", policy)
        return policy

    def effective_policy(self, queue: str) -> dict[str, Any]:
        """The policy definition RabbitMQ applies to `queue` ({} when none)."""
        found = self._call("GET", f"/api/queues/{_q(self.vhost)}/{_q(queue)}", missing_ok=True)
        definition = found.get("effective_policy_definition") if isinstance(found, dict) else None
        return definition if isinstance(definition, dict) else {}

    # -- plumbing ------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        headers: dict[str, str] | None = None,
        missing_ok: bool = False,
    ) -> Any:
        unreachable: list[str] = []
        for base in self.bases:
            try:
                return self._call_one(base, method, path, body, headers, missing_ok)
            except _Unreachable as exc:
                unreachable.append(f"{base} ({exc.reason})")
        raise BrokerUnavailable(
            f"the RabbitMQ management API at {', '.join(unreachable)} is unreachable; "
            f"{HOW_TO_ENABLE}"
        )

    def _call_one(
        self,
        base: str,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        headers: dict[str, str] | None,
        missing_ok: bool,
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - operator-configured URL
            base + path, data=data, method=method
        )
        request.add_header("Authorization", self._auth)
        request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        doing = f"{method} {path}"
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and missing_ok:
                return None
            if exc.code in (401, 403):
                raise ConfigError(
                    f"the RabbitMQ management API at {base} refused the broker URL's user "
                    f"({exc.code}) for {doing}: managing terminal users needs the "
                    "administrator tag, setting policies the policymaker tag"
                ) from exc
            detail = exc.read().decode(errors="replace")[:200]
            raise BrokerUnavailable(
                f"the RabbitMQ management API at {base} answered {exc.code} to {doing}: {detail}"
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise _Unreachable(getattr(exc, "reason", exc)) from exc
        return json.loads(raw) if raw.strip() else None


class _Unreachable(Exception):
    """Raised when one management API URL does not answer (the next one is tried)."""

    def __init__(self, reason: object) -> None:
        super().__init__(str(reason))
        self.reason = reason


def _q(part: str) -> str:
    return quote(part, safe="")


def policy_definition() -> dict[str, Any]:
    """What the dead-letter policy sets: a quorum queue takes both keys from a policy. Where
    a queue also has them as arguments (`cajasync.ops`, declared with both), they name the
    same values, so which one RabbitMQ prefers changes nothing."""
    return {"dead-letter-exchange": DEAD_EXCHANGE, "delivery-limit": DELIVERY_LIMIT}


def apply_policies(settings: Settings) -> dict[str, Any]:
    """Set the dead-letter policy on the broker URL's virtual host (`server init`)."""
    return Management(settings).apply_policies()


def effective_policy(settings: Settings, queue: str) -> dict[str, Any]:
    """The policy definition RabbitMQ applies to `queue` ({} when none)."""
    return Management(settings).effective_policy(queue)
