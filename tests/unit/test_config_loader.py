import textwrap
from pathlib import Path

import pytest

from extproc.hooks.loader import HandlerError
from extproc.request import pipeline
from extproc.settings import config
from extproc.settings.config import ConfigError
from extproc.types import HookKind


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


HANDLER = """
from extproc import CustomLogger

class Handler(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        return None

proxy_handler_instance = Handler()
"""


def test_litellm_config_as_is(tmp_path):
    write(tmp_path, "custom_callbacks.py", HANDLER)
    path = write(
        tmp_path,
        "config.yaml",
        """
        model_list:
          - model_name: gpt-3.5-turbo
            litellm_params: {model: gpt-3.5-turbo, api_key: os.environ/TEST_KEY}
        litellm_settings:
          callbacks: custom_callbacks.proxy_handler_instance
          drop_params: true
        general_settings:
          enforce_user_param: true
          database_url: postgresql://db/litellm
    """,
    )
    import os

    os.environ["TEST_KEY"] = "sekret"
    try:
        loaded = config.load(path)
    finally:
        del os.environ["TEST_KEY"]
    assert loaded.callbacks == ("custom_callbacks.proxy_handler_instance",)
    assert loaded.enforce_user_param is True
    assert loaded.model_list[0].litellm_params["api_key"] == "sekret"
    assert any(w.startswith("litellm_settings.drop_params: ignored by llm-extproc") for w in loaded.warnings)
    assert any(w.startswith("general_settings.database_url: ignored by llm-extproc") for w in loaded.warnings)
    built = pipeline.build(loaded)
    assert [h.label for h in built.chain.hooks[HookKind.PRE_CALL]] == [
        "custom_callbacks.proxy_handler_instance.async_pre_call_hook"
    ]


def test_callbacks_list_and_extproc_section(tmp_path):
    path = write(
        tmp_path,
        "c.yaml",
        """
        litellm_settings:
          callbacks: [a.b, c.d]
        extproc:
          listen: ["0.0.0.0:9000", "unix:/tmp/x.sock"]
          max_request_bytes: 4096
          hook_timeout_ms: 250
          auth:
            headers: {user_id: X-User, team_id: x-team, max_parallel_requests: x-par}
            metadata: {org_id: "envoy.filters.http.jwt_authn:payload.org"}
          surprise: 1
    """,
    )
    loaded = config.load(path)
    assert loaded.callbacks == ("a.b", "c.d")
    sidecar = loaded.sidecar
    assert sidecar.listen == ("0.0.0.0:9000", "unix:/tmp/x.sock")
    assert (sidecar.max_request_bytes, sidecar.hook_timeout_ms) == (4096, 250)
    assert ("user_id", "x-user") in sidecar.auth.headers
    assert sidecar.auth.namespaces == ("envoy.filters.http.jwt_authn",)
    assert "extproc.surprise: unknown key, ignored" in loaded.warnings


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("extproc: {listen: 'nonsense'}", "extproc.listen: 'nonsense' is neither host:port nor unix:/path"),
        ("extproc: {max_request_bytes: -1}", "extproc.max_request_bytes: expected an integer"),
        ("extproc: {auth: {headers: {api_key: x-key}}}", "no settable field 'api_key'"),
        ("extproc: {auth: {metadata: {user_id: nocolon}}}", "expected 'namespace:path'"),
        ("general_settings: {enforce_user_param: 'yes'}", "enforce_user_param: expected true or false"),
        ("litellm_settings: {callbacks: 3}", "litellm_settings.callbacks"),
        ("model_list: [{model_name: x}]", "model_list[0].litellm_params.model"),
        (
            "model_list: [{litellm_params: {model: x}, model_name: os.environ/NOPE_NOT_SET}]",
            "environment variable 'NOPE_NOT_SET' is not set",
        ),
        ("[1, 2]", "expected a mapping"),
        ("extproc: {workers: 0}", "extproc.workers: expected an integer >= 1"),
        ("extproc: {workers: 65}", "extproc.workers: at most 64"),
        ("extproc: {workers: 2, listen: ['127.0.0.1:0']}", "several workers need fixed ports"),
        ("extproc: {workers: 3, listen: ['127.0.0.1:65534']}", "worker 2 would listen on port 65536"),
        ("extproc: {workers: 2, listen: ['unix:/s'], metrics_listen: ':65535'}", "port 65536, above"),
        ("a: [", "not valid YAML"),
        ("extproc: {routing: true, forward_headers: [x-user]}", "extproc.routing: not supported in one-message mode"),
        # A header name becomes a Lua table key in Envoy's config: only HTTP token characters.
        ("extproc: {forward_headers: ['x-a\"] = nil; os.exit() --']}", "extproc.forward_headers: expected a list"),
        ("extproc: {messages: three}", "extproc.messages: expected 'one' or 'two'"),
        ("extproc: {auth: {trusted_headers: [x-team]}}", "extproc.auth.trusted_headers: 'x-team' is not"),
        ("extproc: {auth: {trusted_headers: yes-please}}", "extproc.auth.trusted_headers: expected a list"),
        (
            "extproc: {auth: {credential_headers: x-secret}}",
            "extproc.auth.credential_headers: expected a list",
        ),
        ("extproc: {auth: {headers: {team_id: authorization}}}", "'authorization' cannot carry an identity"),
        (
            "extproc: {auth: {headers: {team_id: x-t}, credential_headers: [X-T]}}",
            "extproc.auth.headers.team_id: 'x-t' is listed as a credential header",
        ),
        ("extproc: {auth: {surprise: 1}}", "extproc.auth.surprise: unknown key"),
        (
            "model_list: [{model_name: a, litellm_params: {model: a}, model_info: {id: 'dep 1'}},"
            " {model_name: b, litellm_params: {model: b}, model_info: {id: 'dep/1'}}]\n"
            "extproc: {routing: true}",
            "deployments 0 and 1 both route as 'dep-1'",
        ),
        (
            "model_list: [{model_name: a, litellm_params: {model: a, api_base: 'host:8000/v1'}}]\n"
            "extproc: {routing: true}",
            "model_list[0].litellm_params.api_base: 'host:8000/v1' is not usable: write api_base as",
        ),
        (
            "model_list: [{model_name: a, litellm_params: {model: a, api_base: 'http://h/v1?x=1'}}]\n"
            "extproc: {routing: true}",
            "is not usable",
        ),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, fragment):
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "nope.yaml")


def load_with_handler(tmp_path, handler_source, reference="h.proxy_handler_instance"):
    write(tmp_path, "h.py", handler_source)
    path = write(tmp_path, "config.yaml", f"litellm_settings: {{callbacks: {reference}}}")
    return pipeline.load(path)


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        (
            "from extproc import CustomLogger\nclass H(CustomLogger):\n"
            "    def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):\n        return data\n"
            "proxy_handler_instance = H()\n",
            "H.async_pre_call_hook must be 'async def'",
        ),
        (
            "from extproc import CustomLogger\nclass H(CustomLogger):\n"
            "    async def async_pre_call_hook(self, data):\n        return data\n"
            "proxy_handler_instance = H()\n",
            "must accept (user_api_key_dict, cache, data, call_type)",
        ),
        (
            "from extproc import CustomLogger\nclass H(CustomLogger):\n"
            "    async def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response, request_data):\n"
            "        return response\nproxy_handler_instance = H()\n",
            "must be an async generator",
        ),
        ("import not_a_module_anywhere\n", "failed to import: ModuleNotFoundError"),
        ("x = 1\n", "has no 'proxy_handler_instance'"),
        ("raise RuntimeError('at import')\n", "RuntimeError: at import"),
    ],
)
def test_handler_errors_name_handler_and_method(tmp_path, source, fragment):
    with pytest.raises(HandlerError) as info:
        load_with_handler(tmp_path, source)
    assert fragment in str(info.value)


def test_missing_module_says_where_it_looked(tmp_path):
    path = write(tmp_path, "config.yaml", "litellm_settings: {callbacks: nowhere.proxy_handler_instance}")
    with pytest.raises(HandlerError, match=r"module 'nowhere' not found \(looked for .*/nowhere.py"):
        pipeline.load(path)


def test_reference_without_attribute(tmp_path):
    # A bare name is one of LiteLLM's integrations: one it does not know is refused at config time.
    path = write(tmp_path, "config.yaml", "litellm_settings: {callbacks: no_such_integration}")
    with pytest.raises(ConfigError, match=r"no_such_integration: .*module\.attribute"):
        pipeline.load(path)


def test_class_reference_is_instantiated_and_siblings_import(tmp_path):
    write(tmp_path, "helpers_mod.py", "MODEL = 'from-sibling'\n")
    built = load_with_handler(
        tmp_path,
        "from extproc import CustomLogger\nfrom helpers_mod import MODEL\n"
        "class H(CustomLogger):\n    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):\n"
        "        data['model'] = MODEL\n",
        reference="h.H",
    )
    assert len(built.chain.hooks[HookKind.PRE_CALL]) == 1


def test_only_overridden_hooks_count_and_phases_follow(tmp_path):
    empty = load_with_handler(
        tmp_path, "from extproc import CustomLogger\nproxy_handler_instance = CustomLogger()\n"
    )
    assert empty.chain.empty and not empty.needs_sidecar
    with_hook = load_with_handler(tmp_path, HANDLER)
    assert with_hook.needs_sidecar
    assert with_hook.request_mode.request_body.name == "BUFFERED"
    assert with_hook.request_mode.response_headers is False


def test_enforce_user_param_alone_needs_the_request_body(tmp_path):
    path = write(tmp_path, "config.yaml", "general_settings: {enforce_user_param: true}")
    built = pipeline.load(path)
    assert built.chain.empty and built.needs_sidecar
    assert built.request_mode.request_body.name == "BUFFERED"


def test_callbacks_from_one_file_share_one_module(tmp_path):
    write(
        tmp_path,
        "shared.py",
        """
        from extproc import CustomLogger
        LOADS = []
        LOADS.append(1)
        class A(CustomLogger):
            async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
                return None
        a, b = A(), A()
    """,
    )
    path = write(tmp_path, "config.yaml", "litellm_settings: {callbacks: [shared.a, shared.b]}")
    built = pipeline.load(path)
    import sys

    module = sys.modules["shared"]
    assert module.LOADS == [1]
    assert [h.instance for h in built.chain.handlers] == [module.a, module.b]


BUILTIN = """
from extproc import CustomLogger

class Handler(CustomLogger):
    def __init__(self, limit: int = 1, words: tuple = ()):
        super().__init__()
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit, self.words = limit, words

    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        return None
"""


def test_a_module_reference_means_its_handler_class_with_options(tmp_path):
    write(tmp_path, "plugins/__init__.py", "")
    write(tmp_path, "plugins/limiter.py", BUILTIN)
    path = write(
        tmp_path,
        "config.yaml",
        """
        litellm_settings: {callbacks: [plugins.limiter]}
        extproc:
          handlers:
            plugins.limiter: {timeout_ms: 100, fail_open: true, options: {limit: 5}}
    """,
    )
    built = pipeline.load(path)
    (handler,) = built.chain.handlers
    assert handler.instance.limit == 5
    (hook,) = built.chain.hooks[HookKind.PRE_CALL]
    assert (hook.timeout_s, hook.fail_open) == (0.1, True)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ("{limit: 0}", "bad options: ValueError: limit must be >= 1"),
        ("{limt: 3}", "bad options: TypeError"),
    ],
)
def test_bad_builtin_options_are_named(tmp_path, options, fragment):
    write(tmp_path, "plugins/__init__.py", "")
    write(tmp_path, "plugins/limiter.py", BUILTIN)
    path = write(
        tmp_path,
        "config.yaml",
        f"""
        litellm_settings: {{callbacks: [plugins.limiter]}}
        extproc: {{handlers: {{plugins.limiter: {{options: {options}}}}}}}
    """,
    )
    with pytest.raises(HandlerError) as info:
        pipeline.load(path)
    assert "callback 'plugins.limiter'" in str(info.value) and fragment in str(info.value)


def test_options_for_an_instance_are_refused(tmp_path):
    write(tmp_path, "custom_callbacks.py", HANDLER)
    path = write(
        tmp_path,
        "config.yaml",
        """
        litellm_settings: {callbacks: custom_callbacks.proxy_handler_instance}
        extproc: {handlers: {custom_callbacks.proxy_handler_instance: {options: {a: 1}}}}
    """,
    )
    with pytest.raises(HandlerError, match="it is an instance, not a class"):
        pipeline.load(path)


def test_every_documented_extproc_key_is_known(tmp_path):
    path = write(
        tmp_path,
        "c.yaml",
        """
        extproc:
          listen: ["127.0.0.1:0"]
          max_request_bytes: 4096
          max_json_depth: 16
          max_stream_hold_bytes: 4096
          hook_timeout_ms: 100
          failure_mode_allow: false
          grace_seconds: 1
          log_level: debug
          auth: {headers: {user_id: x-user}}
          handlers: {}
          cache: {redis_url: "redis://127.0.0.1:6379/0", on_unavailable: deny, timeout_ms: 100}
    """,
    )
    loaded = config.load(path)
    assert loaded.warnings == ()
    assert (loaded.sidecar.cache.redis_url, loaded.sidecar.cache.on_unavailable) == (
        "redis://127.0.0.1:6379/0",
        "deny",
    )
    assert loaded.sidecar.max_stream_hold_bytes == 4096


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("extproc: {cache: {redis_url: 'http://x'}}", "extproc.cache.redis_url: expected redis://"),
        ("extproc: {cache: {on_unavailable: maybe}}", "extproc.cache.on_unavailable"),
        ("extproc: {cache: {url: x}}", "extproc.cache.url: unknown key"),
    ],
)
def test_cache_settings_errors(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        config.load(write(tmp_path, "c.yaml", text))


def test_handlers_load_only_from_configured_paths(tmp_path):
    # an importable module that is not in the config's folder, handler_paths or the built-ins is refused
    path = write(tmp_path, "config.yaml", "litellm_settings: {callbacks: json.dumps}")
    with pytest.raises(HandlerError, match="handler modules load only from the config's folder"):
        pipeline.load(path)
    # a folder named in extproc.handler_paths is searched (relative to the config's folder)
    write(tmp_path, "plugins/extra.py", HANDLER)
    path = write(
        tmp_path,
        "config.yaml",
        """
        litellm_settings: {callbacks: extra.proxy_handler_instance}
        extproc: {handler_paths: [plugins]}
    """,
    )
    assert len(pipeline.load(path).chain.hooks[HookKind.PRE_CALL]) == 1


def test_a_handler_folder_cannot_shadow_the_standard_library(tmp_path):
    import json
    import sys

    write(tmp_path, "json.py", "raise RuntimeError('shadowed')\n")
    write(tmp_path, "custom_callbacks.py", HANDLER)
    path = write(
        tmp_path, "config.yaml", "litellm_settings: {callbacks: custom_callbacks.proxy_handler_instance}"
    )
    pipeline.load(path)
    stdlib = str(Path(json.__file__).parent.parent)
    assert sys.path.index(str(tmp_path)) > sys.path.index(stdlib)
    del sys.modules["json"]
    try:
        import json as reimported
    finally:
        sys.modules["json"] = json
    assert reimported.__file__ == json.__file__


def test_workers_without_a_shared_cache_warn_that_limits_count_per_worker(tmp_path):
    alone = config.load(write(tmp_path, "a.yaml", "extproc: {workers: 3, listen: ['unix:/tmp/s']}"))
    assert alone.sidecar.workers == 3
    assert any("rate limits count per worker" in w for w in alone.warnings)
    shared = config.load(
        write(tmp_path, "b.yaml", "extproc: {workers: 3, cache: {redis_url: 'redis://127.0.0.1:6379'}}")
    )
    assert shared.warnings == ()


@pytest.mark.parametrize(
    ("text", "listen", "metrics"),
    [
        ("extproc: {}", ("127.0.0.1:50051",), None),
        ("extproc: {listen: 'unix:/run/x.sock', metrics_listen: ':9090'}", ("unix:/run/x.sock",), ":9090"),
        ("extproc: {listen: ['h:09000', 'unix:/s']}", ("h:9000", "unix:/s"), None),
    ],
)
def test_listen_addresses_are_kept_in_their_string_form(tmp_path, text, listen, metrics):
    from extproc.settings.listen import ListenAddress

    sidecar = config.load(write(tmp_path, "config.yaml", text)).sidecar
    assert sidecar.listen == listen
    assert sidecar.listen_addresses == tuple(ListenAddress.parse(a) for a in listen)
    assert sidecar.metrics_listen == metrics
    assert sidecar.metrics_address == (None if metrics is None else ListenAddress.parse_tcp(metrics))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("extproc: {listen: 'unix:'}", "extproc.listen: 'unix:' needs a socket path"),
        ("extproc: {listen: []}", "extproc.listen: expected an address or a list of addresses"),
        ("extproc: {metrics_listen: 9090}", "extproc.metrics_listen: expected host:port, got 9090"),
        ("extproc: {metrics_listen: 'unix:/m'}", "extproc.metrics_listen: expected host:port, got 'unix:/m'"),
        (
            "extproc: {workers: 2, listen: ['127.0.0.1:0']}",
            "extproc.workers: several workers need fixed ports in extproc.listen",
        ),
        (
            "extproc: {workers: 3, listen: ['127.0.0.1:65534']}",
            "extproc.workers: 127.0.0.1:65534: worker 2 would listen on port 65536, above 65535",
        ),
    ],
)
def test_listen_errors_read_as_before(tmp_path, text, message):
    path = write(tmp_path, "config.yaml", text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(info.value) == f"{path}: {message}"


def test_several_workers_with_any_free_metrics_port_load(tmp_path):
    text = "extproc: {workers: 2, listen: ['unix:/s'], metrics_listen: '127.0.0.1:0'}"
    loaded = config.load(write(tmp_path, "config.yaml", text))
    assert loaded.sidecar.workers == 2
    assert any("rate limits count per worker" in warning for warning in loaded.warnings)


def test_settings_import_nothing_from_the_layers_above():
    import json
    import subprocess
    import sys

    probe = "import json, sys, extproc.settings.config; print(json.dumps(sorted(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    above = ("extproc.ops", "extproc.request", "extproc.envoy", "extproc.devtools")
    assert [name for name in json.loads(run.stdout) if name.startswith(above)] == []


def test_credential_headers_add_to_the_defaults(tmp_path):
    loaded = config.load(
        write(tmp_path, "c.yaml", "extproc: {auth: {credential_headers: [X-Tenant-Secret]}}")
    )
    credentials = loaded.sidecar.auth.credential_headers
    assert {"x-tenant-secret", "authorization", "ocp-apim-subscription-key", "x-auth-token"} <= credentials


def test_identity_headers_are_untrusted_unless_declared(tmp_path):
    text = "extproc: {auth: {headers: {team_id: x-team, rpm_limit: x-rpm}, trusted_headers: [X-Team]}}"
    auth = config.load(write(tmp_path, "c.yaml", text)).sidecar.auth
    assert auth.untrusted_headers == ("x-rpm",)
