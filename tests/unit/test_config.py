"""Configuration from the environment: required variables, normalisation, one-line errors."""

import pytest

from tests.support.signing import TEST_SECRET
from webhook_service.config import SETTINGS, Config, ConfigError

BASE = {"MONGODB_URI": "mongodb://localhost:27017/xclone", "CLERK_WEBHOOK_SIGNING_SECRET": TEST_SECRET}


@pytest.mark.parametrize(
    "raw", ["https://api.clerk.com", "https://api.clerk.com/", "https://api.clerk.com/v1", "https://api.clerk.com/v1/"]
)
def test_clerk_api_url_with_or_without_v1_gives_one_v1(raw):
    config = Config.from_env(dict(BASE, CLERK_API_URL=raw))
    assert config.clerk_server_url == "https://api.clerk.com/v1"


def test_defaults():
    config = Config.from_env(BASE)
    assert config.clerk_server_url == "https://api.clerk.com/v1"
    assert config.event_retention_days == 7
    assert config.clerk_secret_key is None
    assert config.authorized_parties == ()


@pytest.mark.parametrize(
    ("raw", "address"),
    [
        ("", ("127.0.0.1", 9464)),  # loopback by default: never the public port's audience
        ("0.0.0.0:9464", ("0.0.0.0", 9464)),  # one variable exposes it to a cluster's scraper
        (" [::]:9100 ", ("::", 9100)),
        ("off", None),
    ],
)
def test_the_metrics_listener_address(raw, address):
    assert Config.from_env(dict(BASE, METRICS_ADDR=raw)).metrics_addr == address


def test_authorized_parties_are_split_and_trimmed():
    config = Config.from_env(dict(BASE, CLERK_AUTHORIZED_PARTIES=" https://a.dev, ,https://b.dev "))
    assert config.authorized_parties == ("https://a.dev", "https://b.dev")


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"MONGODB_URI": ""}, "MONGODB_URI"),
        ({"MONGODB_URI": "postgres://x/y"}, "MONGODB_URI"),
        ({"MONGODB_URI": "mongodb://localhost:27017"}, "MONGODB_URI"),
        ({"CLERK_WEBHOOK_SIGNING_SECRET": ""}, "CLERK_WEBHOOK_SIGNING_SECRET"),
        ({"CLERK_JWT_KEY": "not a pem"}, "CLERK_JWT_KEY"),
        ({"EVENT_RETENTION_DAYS": "soon"}, "EVENT_RETENTION_DAYS"),
        ({"EVENT_RETENTION_DAYS": "0"}, "EVENT_RETENTION_DAYS"),
        ({"DB_TIMEOUT_MS": "fast"}, "DB_TIMEOUT_MS"),
        ({"CLERK_RETRY_BUDGET_MS": "x"}, "CLERK_RETRY_BUDGET_MS"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"CLERK_API_URL": "ftp://api"}, "CLERK_API_URL"),
        ({"METRICS_ADDR": "9464"}, "METRICS_ADDR"),
        ({"METRICS_ADDR": "0.0.0.0"}, "METRICS_ADDR"),
        ({"METRICS_ADDR": "0.0.0.0:http"}, "METRICS_ADDR"),
        ({"METRICS_ADDR": "0.0.0.0:70000"}, "METRICS_ADDR"),
        ({"METRICS_ADDR": "http://0.0.0.0:9464/metrics"}, "METRICS_ADDR"),
    ],
)
def test_bad_values_name_the_variable(overrides, named):
    with pytest.raises(ConfigError) as caught:
        Config.from_env(dict(BASE, **overrides))
    assert named in str(caught.value)
    assert "\n" not in str(caught.value)


def test_secret_values_stay_out_of_repr():
    config = Config.from_env(dict(BASE, CLERK_SECRET_KEY="sk_test_abc"))
    assert TEST_SECRET not in repr(config)
    assert "sk_test_abc" not in repr(config)


class _Recording(dict):
    """An environment that remembers every name asked of it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.asked: set[str] = set()

    def get(self, key, default=None):
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.asked.add(key)
        return super().__contains__(key)


def test_settings_names_every_variable_the_configuration_reads():
    env = _Recording(BASE)
    Config.from_env(env)
    assert env.asked == set(SETTINGS)
