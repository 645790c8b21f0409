"""Provider presets: the wire API, default base URL and environment names of each
provider Corral knows. A config `type:` names one of these.

Zero-config mode builds a provider for every preset whose ``key_env`` is set
(`<NAME>_ENABLED=false` switches one off, `<NAME>_BASE_URL` points it elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    wire: str  # "openai" | "anthropic" | "gemini" | "scripted"
    base_url: str | None
    key_env: str | None  # environment variable holding the API key
    default_model: str | None = None  # what zero-config serves from this provider
    needs_key: bool = True

    @property
    def env_prefix(self) -> str:
        return self.name.upper().replace("-", "_").replace(".", "_")


_PRESETS = [
    Preset("openai", "openai", "https://api.openai.com/v1", "OPENAI_API_KEY", "gpt-4o-mini"),
    Preset("anthropic", "anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY", "claude-3-5-haiku-latest"),
    Preset("gemini", "gemini", "https://generativelanguage.googleapis.com/v1beta", "GEMINI_API_KEY",
           "gemini-2.0-flash"),
    Preset("mistral", "openai", "https://api.mistral.ai/v1", "MISTRAL_API_KEY", "mistral-small-latest"),
    Preset("groq", "openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY", "llama-3.1-8b-instant"),
    Preset("cerebras", "openai", "https://api.cerebras.ai/v1", "CEREBRAS_API_KEY", "llama3.1-8b"),
    Preset("deepseek", "openai", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", "deepseek-chat"),
    Preset("openrouter", "openai", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", "openai/gpt-4o-mini"),
    Preset("together", "openai", "https://api.together.xyz/v1", "TOGETHER_API_KEY",
           "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
    Preset("xai", "openai", "https://api.x.ai/v1", "XAI_API_KEY", "grok-2-latest"),
    Preset("fireworks", "openai", "https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY",
           "accounts/fireworks/models/llama-v3p1-8b-instruct"),
    # Azure-style: base_url is https://<resource>.openai.azure.com/openai/deployments/<name>,
    # `api_version` adds ?api-version=..., and the key travels in the `api-key` header.
    Preset("azure", "openai", None, "AZURE_OPENAI_API_KEY"),
    Preset("vllm", "openai", "http://127.0.0.1:8000/v1", None, needs_key=False),
    Preset("llamacpp", "openai", "http://127.0.0.1:8080/v1", None, needs_key=False),
    Preset("ollama", "openai", "http://127.0.0.1:11434/v1", None, needs_key=False),
    Preset("openai-compatible", "openai", None, None, needs_key=False),
    Preset("scripted", "scripted", None, None, needs_key=False),
]

PRESETS: dict[str, Preset] = {p.name: p for p in _PRESETS}

# The order zero-config mode picks its default model in.
ZERO_CONFIG_ORDER = [
    "openai", "anthropic", "gemini", "mistral", "groq", "cerebras", "deepseek", "openrouter", "together", "xai",
    "fireworks",
]
