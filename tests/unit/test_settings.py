"""Settings are checked when made: a value out of range stops with one line naming it."""

from __future__ import annotations

import dataclasses

import pytest

from cajasync.core.settings import (
    AT_LEAST_ONE,
    NON_NEGATIVE_SECONDS,
    POSITIVE_SECONDS,
    Settings,
    load_settings,
    variable,
)
from cajasync.errors import ConfigError


def _refused(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_publish_window_of_0_is_refused_naming_its_variable() -> None:
    """It made the relay publish nothing and exit 0."""
    message = _refused({"CAJASYNC_PUBLISH_WINDOW": "0"})
    assert message == "CAJASYNC_PUBLISH_WINDOW=0 is out of range: it must be 1 or more"


@pytest.mark.parametrize("name", AT_LEAST_ONE)
@pytest.mark.parametrize("raw", ["0", "-5"])
def test_every_window_batch_and_prefetch_must_be_1_or_more(name: str, raw: str) -> None:
    assert _refused({variable(name): raw}).startswith(f"{variable(name)}={raw} is out of range")


@pytest.mark.parametrize("name", POSITIVE_SECONDS)
@pytest.mark.parametrize("raw", ["0", "-1", "nan", "inf"])
def test_every_interval_must_be_a_finite_number_of_seconds_above_0(name: str, raw: str) -> None:
    environ = {variable(name): raw}
    if name == "retry_initial_s":
        environ[variable("retry_max_s")] = "1e308"  # the order rule is not what is tested
    message = _refused(environ)
    assert message.startswith(f"{variable(name)}=")
    assert message.endswith("is out of range: it must be above 0 seconds")


@pytest.mark.parametrize("name", NON_NEGATIVE_SECONDS)
def test_a_grace_may_be_0_but_not_negative(name: str) -> None:
    assert getattr(load_settings({variable(name): "0"}), name) == 0
    assert _refused({variable(name): "-0.5"}).endswith("it must be 0 or more seconds")


def test_the_first_reconnect_wait_cannot_exceed_the_longest() -> None:
    message = _refused({"CAJASYNC_RETRY_INITIAL_S": "20", "CAJASYNC_RETRY_MAX_S": "10"})
    assert message == (
        "CAJASYNC_RETRY_INITIAL_S=20.0 is above CAJASYNC_RETRY_MAX_S=10.0: "
        "the first reconnect wait cannot be longer than the longest"
    )


@pytest.mark.parametrize(
    ("name", "url", "message"),
    [
        (
            "broker_url",
            "http://guest:secret@rabbit:5672/",
            "CAJASYNC_BROKER_URL must be a URL starting amqp:// or amqps:// (it starts 'http')",
        ),
        (
            "management_url",
            "rabbit:15672",
            "CAJASYNC_MANAGEMENT_URL must be a URL starting http:// or https:// "
            "(it starts 'rabbit')",
        ),
    ],
)
def test_urls_must_have_their_scheme_and_the_error_hides_the_password(
    name: str, url: str, message: str
) -> None:
    assert _refused({variable(name): url}) == message


def test_the_defaults_and_the_documented_urls_pass() -> None:
    load_settings({})
    load_settings({"CAJASYNC_BROKER_URL": "amqps://till:pw@broker.example:5671/store"})


def test_settings_made_in_code_or_by_overrides_are_checked_too() -> None:
    with pytest.raises(ConfigError, match="CAJASYNC_CLAIM_BATCH=0"):
        Settings(claim_batch=0)
    with pytest.raises(ConfigError, match="CAJASYNC_POLL_INTERVAL_S=-1"):
        Settings().with_overrides(poll_interval_s=-1)
    with pytest.raises(ConfigError, match="CAJASYNC_PREFETCH=0"):
        dataclasses.replace(Settings(), prefetch=0)


def test_a_negative_change_log_retention_is_refused_naming_its_variable() -> None:
    with pytest.raises(ConfigError, match="CAJASYNC_CHANGELOG_KEEP=-1"):
        Settings().with_overrides(changelog_keep=-1)


def test_an_override_replaces_the_environment_before_the_check() -> None:
    settings = load_settings({"CAJASYNC_PUBLISH_WINDOW": "0"}, publish_window=50)
    assert settings.publish_window == 50


def test_every_numeric_setting_has_a_range() -> None:
    from cajasync.core import settings as module

    ranged = {
        *module.AT_LEAST_ONE,
        *module.POSITIVE_SECONDS,
        *module.NON_NEGATIVE_SECONDS,
        *module.NON_NEGATIVE_INTS,
    }
    numeric = {
        f.name for f in dataclasses.fields(Settings) if f.type in (int, float, "int", "float")
    }
    assert numeric - ranged == set()


@pytest.mark.parametrize(
    ("name", "value", "least"),
    [("store_give_up_s", "0", "above 0"), ("head_interval_s", "-1", "0 or more")],
)
def test_the_server_waits_are_checked_too(name: str, value: str, least: str) -> None:
    assert _refused({variable(name): value}) == (
        f"{variable(name)}={float(value)!r} is out of range: it must be {least} seconds"
    )


def test_a_broker_url_may_name_every_node_of_a_cluster() -> None:
    from cajasync.core.settings import first_url, url_list

    value = "amqp://u:p@mq1:5701/s, amqp://u:p@mq2:5702/s amqp://u:p@mq3:5703/s"
    settings = load_settings({"CAJASYNC_BROKER_URL": value})
    assert url_list(settings.broker_url) == (
        "amqp://u:p@mq1:5701/s",
        "amqp://u:p@mq2:5702/s",
        "amqp://u:p@mq3:5703/s",
    )
    assert first_url(settings.broker_url) == "amqp://u:p@mq1:5701/s"


def test_every_node_of_a_list_is_checked_and_they_share_one_scheme() -> None:
    assert _refused({"CAJASYNC_BROKER_URL": "amqp://mq1/s,http://mq2/s"}) == (
        "CAJASYNC_BROKER_URL must be a URL starting amqp:// or amqps:// (it starts 'http')"
    )
    assert _refused({"CAJASYNC_BROKER_URL": "amqp://mq1/s,amqps://mq2/s"}) == (
        "CAJASYNC_BROKER_URL mixes schemes: every node is reached the same way"
    )
