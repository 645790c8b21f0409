"""Zero-config: providers from environment keys, Ollama when it answers, else scripted."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from corral.config.errors import ConfigError
from corral.config.zero import probe_ollama_models, zero_config


class _OllamaTags(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"models": [{"name": "llama3.2:latest"}, {"name": "qwen3:8b"}]}).encode()
        status = 200 if self.path == "/api/tags" else 404
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def ollama_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OllamaTags)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_no_keys_serves_the_offline_scripted_model() -> None:
    loaded = zero_config({}, probe_ollama=False)
    config = loaded.config
    assert loaded.zero_config is True and loaded.path is None
    assert list(config.providers) == ["scripted"]
    assert config.providers["scripted"].type == "scripted" and config.providers["scripted"].echo is True
    assert config.models["scripted"].provider == "scripted"
    assert config.default_model == "scripted"
    assert any(n.startswith("no provider key found: serving the offline scripted model") for n in loaded.notes)


def test_each_set_key_becomes_a_passthrough_provider_with_its_default_model() -> None:
    env = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a", "MISTRAL_API_KEY": ""}
    loaded = zero_config(env, probe_ollama=False)
    config = loaded.config
    assert list(config.providers) == ["openai", "anthropic"]  # an empty key does not count
    assert all(p.passthrough for p in config.providers.values())
    assert set(config.models) == {"openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-latest"}
    assert config.models["openai/gpt-4o-mini"].model == "gpt-4o-mini"
    assert config.default_model == "openai/gpt-4o-mini"  # ZERO_CONFIG_ORDER puts openai first
    assert loaded.passthrough_providers == frozenset({"openai", "anthropic"})
    key = config.providers["anthropic"].api_key
    assert key is not None and key.get_secret_value() == "sk-a"


def test_enabled_false_skips_a_provider_even_with_its_key() -> None:
    env = {"OPENAI_API_KEY": "sk-o", "MISTRAL_API_KEY": "m", "MISTRAL_ENABLED": "false"}
    loaded = zero_config(env, probe_ollama=False)
    assert list(loaded.config.providers) == ["openai"]
    assert "MISTRAL_ENABLED=false: mistral skipped" in loaded.notes


def test_all_keyed_providers_disabled_falls_back_to_scripted() -> None:
    loaded = zero_config({"GROQ_API_KEY": "g", "GROQ_ENABLED": "off"}, probe_ollama=False)
    assert list(loaded.config.providers) == ["scripted"]


def test_base_url_variable_points_a_provider_elsewhere() -> None:
    env = {"OPENAI_API_KEY": "sk-o", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    assert zero_config(env, probe_ollama=False).config.providers["openai"].base_url == "http://127.0.0.1:9/v1"


def test_keyless_presets_join_through_their_base_url() -> None:
    config = zero_config({"VLLM_BASE_URL": "http://gpu:8000/v1"}, probe_ollama=False).config
    assert config.providers["vllm"].base_url == "http://gpu:8000/v1"
    assert config.providers["vllm"].passthrough is True
    assert config.models == {} and config.default_model is None


def test_azure_key_without_a_base_url_is_skipped_with_a_note() -> None:
    loaded = zero_config({"AZURE_OPENAI_API_KEY": "az"}, probe_ollama=False)
    assert "azure" not in loaded.config.providers
    assert "AZURE_OPENAI_API_KEY is set but AZURE_BASE_URL is not: azure skipped" in loaded.notes


def test_ollama_that_answers_is_served_with_its_models(ollama_url: str) -> None:
    config = zero_config({"OLLAMA_BASE_URL": ollama_url}).config
    assert config.providers["ollama"].base_url == ollama_url
    assert set(config.models) == {"ollama/llama3.2:latest", "ollama/qwen3:8b"}
    assert config.default_model == "ollama/llama3.2:latest"
    assert "scripted" not in config.providers


def test_probe_returns_none_when_nothing_answers(closed_url: str) -> None:
    assert probe_ollama_models(closed_url, timeout=0.5) is None


def test_ollama_not_answering_at_the_default_address_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    probed: list[str] = []

    def probe(base_url: str) -> None:
        probed.append(base_url)

    monkeypatch.setattr("corral.config.zero.probe_ollama_models", probe)
    loaded = zero_config({"OPENAI_API_KEY": "sk"})
    assert probed == ["http://127.0.0.1:11434/v1"]
    assert list(loaded.config.providers) == ["openai"]


def test_explicit_ollama_url_is_kept_even_when_it_does_not_answer(closed_url: str) -> None:
    loaded = zero_config({"OLLAMA_BASE_URL": closed_url})
    assert loaded.config.providers["ollama"].base_url == closed_url
    assert loaded.config.default_model is None
    assert f"Ollama did not answer at {closed_url}: serving it without a model list" in loaded.notes


def test_ollama_enabled_false_skips_the_probe(ollama_url: str) -> None:
    loaded = zero_config({"OLLAMA_BASE_URL": ollama_url, "OLLAMA_ENABLED": "false"})
    assert list(loaded.config.providers) == ["scripted"]


def test_model_argument_picks_and_adds_a_passthrough_alias() -> None:
    config = zero_config({"OPENAI_API_KEY": "sk"}, probe_ollama=False, model="openai/gpt-4.1").config
    assert config.default_model == "openai/gpt-4.1"
    assert config.models["openai/gpt-4.1"].model == "gpt-4.1"


def test_model_argument_matches_a_bare_upstream_name() -> None:
    config = zero_config({"OPENAI_API_KEY": "sk"}, probe_ollama=False, model="gpt-4o-mini").config
    assert config.default_model == "openai/gpt-4o-mini"


def test_model_scripted_adds_the_offline_model_next_to_real_providers() -> None:
    config = zero_config({"OPENAI_API_KEY": "sk"}, probe_ollama=False, model="scripted").config
    assert config.default_model == "scripted"
    assert set(config.providers) == {"openai", "scripted"}


def test_model_naming_an_unconfigured_provider_says_which_variable_to_set() -> None:
    with pytest.raises(ConfigError) as info:
        zero_config({}, probe_ollama=False, model="anthropic/claude-sonnet-4")
    assert str(info.value) == (
        "--model: unknown model 'anthropic/claude-sonnet-4': provider 'anthropic' is not configured "
        "(set ANTHROPIC_API_KEY)"
    )


def test_corral_master_key_applies_in_zero_config() -> None:
    config = zero_config({"CORRAL_MASTER_KEY": "mk"}, probe_ollama=False).config
    assert config.auth.master_key is not None and config.auth.master_key.get_secret_value() == "mk"
