"""The scripted model, for tests of your own agents: deterministic replies, tool
calls, errors and delays, offline::

    from corral.testing.scripted import ScriptedProvider
    provider = ScriptedProvider.from_steps("s", [ScriptStep(text="hi"), ScriptStep(error="rate_limit")])

It is a provider like the others (config ``type: scripted``) and lives with them in
`corral.llm.providers.scripted`; this module re-exports it.
"""

from corral.llm.providers.scripted import ScriptedProvider

__all__ = ["ScriptedProvider"]
