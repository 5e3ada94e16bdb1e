"""Who the server lets in, and whose word it takes for where a till is (inbox/registry.py),
and the TLS parameters of amqps:// URLs: pure rules, no broker, no database."""

from __future__ import annotations

import datetime as dt
import ssl
import uuid

import pytest

from cajasync.broker.management import terminal_permissions, terminal_url
from cajasync.broker.rabbitmq import parameters, username
from cajasync.core.settings import load_settings
from cajasync.errors import ConfigError
from inbox.registry import Registration, as_registered, refusal
from schemas.feed import SnapshotRequest

NOW = dt.datetime(2026, 12, 5, tzinfo=dt.UTC)


def registration(status: str = "active") -> Registration:
    return Registration("T001", "L1", "PV1", "retail", status, "T001", NOW, NOW, NOW)


def test_an_unregistered_till_is_trusted_only_when_the_shared_user_is_allowed() -> None:
    assert refusal("T001", "guest", None, allow_shared=True, in_flight_ok=True) is None
    reason = refusal("T001", "T001", None, allow_shared=False, in_flight_ok=True)
    assert reason is not None
    assert "not registered" in reason


def test_a_registered_till_under_the_shared_user_is_refused_unless_allowed() -> None:
    assert refusal("T001", "guest", registration(), allow_shared=True, in_flight_ok=True) is None
    reason = refusal("T001", "guest", registration(), allow_shared=False, in_flight_ok=True)
    assert reason is not None
    assert "--allow-shared-user" in reason
    assert refusal("T001", "T001", registration(), allow_shared=False, in_flight_ok=True) is None


def test_a_revoked_till_keeps_only_what_its_own_user_had_in_flight() -> None:
    revoked = registration("revoked")
    assert refusal("T001", "T001", revoked, allow_shared=True, in_flight_ok=True) is None
    for user, in_flight in (("guest", True), ("T001", False)):
        reason = refusal("T001", user, revoked, allow_shared=True, in_flight_ok=in_flight)
        assert reason is not None
        assert "revoked" in reason


def test_a_registered_tills_request_takes_the_registrys_location_pos_and_kind() -> None:
    request = SnapshotRequest(
        terminal="T001",
        request_id=str(uuid.uuid4()),
        location="L9",
        pos="PV9",
        terminal_kind="hotel",
        topics=["stock"],
    )
    scoped = as_registered(request, registration())
    assert (scoped.location, scoped.pos, scoped.terminal_kind) == ("L1", "PV1", "retail")
    assert as_registered(request, None) == request


def test_a_tills_broker_user_writes_only_its_own_routing_keys() -> None:
    import re

    allowed = terminal_permissions("T001", "L1")
    assert re.match(allowed.topic_write, "op.T001.ventas")
    assert re.match(allowed.topic_write, "req.T001.snapshot")
    assert not re.match(allowed.topic_write, "op.T002.ventas")
    assert not re.match(allowed.topic_write, "op.T001.ventas.x")
    assert re.match(allowed.read, "cajasync.t.T001")
    assert not re.match(allowed.read, "cajasync.t.T0011")
    assert re.match(allowed.read, "cajasync.s.all")
    assert re.match(allowed.read, "cajasync.s.loc.L1")
    assert not re.match(allowed.read, "cajasync.s.loc.L2")
    assert not re.match(allowed.read, "cajasync.s.loc.L1x")


def test_a_tills_broker_url_keeps_the_servers_host_vhost_and_tls() -> None:
    url = terminal_url("amqps://admin:s3cret@mq.shop:5671/prod?heartbeat=30", "T001", "p/w")
    assert url == "amqps://T001:p%2Fw@mq.shop:5671/prod?heartbeat=30"


def test_amqps_connection_parameters_carry_the_tls_context() -> None:
    ca = ssl.get_default_verify_paths().cafile or ssl.get_default_verify_paths().openssl_cafile
    settings = load_settings({}, broker_url="amqps://T001:pw@mq.shop:5671/%2F", tls_ca_file=ca)
    (params,) = parameters(settings.broker_url, settings=settings)
    assert params.ssl_options is not None
    assert isinstance(params.ssl_options.context, ssl.SSLContext)
    assert params.ssl_options.context.verify_mode == ssl.CERT_REQUIRED
    assert params.ssl_options.server_hostname == "mq.shop"
    assert params.port == 5671


def test_tls_options_need_an_amqps_url_and_a_cert_needs_its_key() -> None:
    with pytest.raises(ConfigError, match="amqps://"):
        load_settings({"CAJASYNC_TLS_CA_FILE": "/ca.pem"})
    with pytest.raises(ConfigError, match="go together"):
        load_settings({"CAJASYNC_BROKER_URL": "amqps://h/%2F", "CAJASYNC_TLS_CERT_FILE": "/c.pem"})


def test_a_missing_ca_file_is_one_line_naming_the_variables() -> None:
    settings = load_settings({}, broker_url="amqps://h/%2F", tls_ca_file="/nonexistent/ca.pem")
    with pytest.raises(ConfigError, match="CAJASYNC_TLS_CA_FILE"):
        parameters(settings.broker_url, settings=settings)


def test_allow_shared_user_reads_as_a_bool_from_the_environment() -> None:
    assert load_settings({"CAJASYNC_ALLOW_SHARED_USER": "0"}).allow_shared_user is False
    assert load_settings({"CAJASYNC_ALLOW_SHARED_USER": "yes"}).allow_shared_user is True
    with pytest.raises(ConfigError, match="CAJASYNC_ALLOW_SHARED_USER"):
        load_settings({"CAJASYNC_ALLOW_SHARED_USER": "maybe"})


def test_a_tills_broker_url_names_every_node_of_the_servers_cluster() -> None:
    url = terminal_url("amqp://admin:s@mq1:5701/prod,amqp://admin:s@mq2:5702/prod", "T001", "pw")
    assert url == "amqp://T001:pw@mq1:5701/prod,amqp://T001:pw@mq2:5702/prod"


def test_connection_parameters_come_one_per_node_in_order() -> None:
    found = parameters("amqp://u:p@mq1:5701/s,amqp://u:p@mq2:5702/s")
    nodes = [(p.host, p.port, p.virtual_host) for p in found]
    assert nodes == [("mq1", 5701, "s"), ("mq2", 5702, "s")]
    assert username("amqp://till:p@mq1:5701/s,amqp://till:p@mq2:5702/s") == "till"
