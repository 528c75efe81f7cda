"""`extproc.cache.redis_url`: one node, Sentinel or a cluster, parsed once; a bad URL is refused at load
with the key named."""

import pytest

from extproc.settings import config
from extproc.settings.config import ConfigError
from extproc.state.store_url import StoreAddress, parse_store_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", StoreAddress("node", "redis://127.0.0.1:6379/0")),
        (
            "redis+sentinel://u:p%40ss@10.0.0.1:26379,10.0.0.2/llm/2",
            StoreAddress(
                "sentinel",
                "redis+sentinel://u:p%40ss@10.0.0.1:26379,10.0.0.2/llm/2",
                (("10.0.0.1", 26379), ("10.0.0.2", 26379)),
                "llm",
                2,
                "u",
                "p@ss",
            ),
        ),
        (
            "rediss+cluster://a:7000,[::1]:7001",
            StoreAddress(
                "cluster", "rediss+cluster://a:7000,[::1]:7001", (("a", 7000), ("::1", 7001)), tls=True
            ),
        ),
    ],
)
def test_urls_name_the_store(url, expected):
    assert parse_store_url(url) == expected


def test_where_leaves_the_credentials_out():
    assert parse_store_url("redis+sentinel://u:secret@h:1/llm").where == "redis+sentinel://h:1/llm"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://x", "expected redis://"),
        ("redis+sentinel://h:26379", "the service name is missing"),
        ("redis+sentinel:///llm", "no sentinel node listed"),
        ("redis+cluster://h:7000/1", "a cluster has only database 0"),
        ("redis+cluster://h:port", "'h:port' is not host:port"),
        ("redis+sentinel://h:1/llm/x", "at most a database number"),
    ],
)
def test_bad_urls_are_refused_at_load_naming_the_key(tmp_path, url, fragment):
    path = tmp_path / "c.yaml"
    path.write_text(f"extproc: {{cache: {{redis_url: '{url}'}}}}")
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(info.value).count("extproc.cache.redis_url: ") == 1 and fragment in str(info.value)


def test_a_sentinel_url_loads(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("extproc: {cache: {redis_url: 'redis+sentinel://127.0.0.1:26379/llm'}}")
    assert config.load(path).sidecar.cache.redis_url == "redis+sentinel://127.0.0.1:26379/llm"


@pytest.mark.parametrize(
    "url", ["redis+sentinel://user:s3cret@h:1", "redis+cluster://:s3cret@h:1/2", "http://user:s3cret@h:1"]
)
def test_a_bad_store_url_is_reported_without_its_password(url):
    with pytest.raises(ValueError) as raised:
        parse_store_url(url)
    assert "s3cret" not in str(raised.value) and "***" in str(raised.value)
