"""What both window test modules share: a vhost of their own with the server's topology."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cajasync.core.settings import Settings
from tests.integration.down_support import vhost_for
from tests.integration.relay_support import declare_server_topology, rabbitmqctl_missing


@pytest.fixture(scope="module")
def window_url(broker_url: str) -> Iterator[str]:
    with vhost_for(broker_url, "window") as url:
        if url is None:
            rabbitmqctl_missing("the window tests")
            return
        declare_server_topology(url)
        yield url


@pytest.fixture
def window_settings(settings: Settings, window_url: str) -> Settings:
    return settings.with_overrides(broker_url=window_url)
