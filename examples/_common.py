"""What every example shares: a model endpoint, either the local stand-in provider or a real model.

With no arguments an example starts the stand-in provider (an OpenAI-compatible HTTP server on loopback that
answers deterministically, with a model-like delay and token usage), so it runs with no API key and no network.
``--model openai/gpt-4o-mini`` (with ``OPENAI_API_KEY`` set) runs the same code against the real model;
``--api-base`` points it at any OpenAI-compatible server instead.

``DTC_EXAMPLES_LATENCY`` sets the stand-in's delay per call in seconds (default 0.3; the test suite uses 0.01).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

# LiteLLM otherwise tries to download its price map at import, which costs seconds without network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

DEFAULT_MODEL = "openai/gpt-4o-mini"
LATENCY = float(os.environ.get("DTC_EXAMPLES_LATENCY", "0.3"))


@dataclass
class Endpoint:
    """Where an example sends its LLM calls."""

    model: str  # LiteLLM / DSPy spelling: provider/model
    api_base: str | None
    api_key: str | None  # None: the provider's usual env var (OPENAI_API_KEY, ...)
    provider: Any = None  # the StandInProvider, when the stand-in is used

    @property
    def upstream_calls(self) -> int | None:
        """Requests the stand-in provider received (what the cache exists to cut); None for a real model."""
        return self.provider.request_count if self.provider is not None else None

    @property
    def bare_model(self) -> str:
        """The model name as OpenAI's own SDK wants it (no ``openai/`` prefix)."""
        return self.model.split("/", 1)[1] if self.model.startswith("openai/") else self.model

    def litellm_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self.model}
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self.api_key:
            kwargs["api_key"] = self.api_key
        return kwargs

    def describe(self) -> str:
        if self.provider is not None:
            return f"{self.model} on the local stand-in provider ({LATENCY:.2f} s per call)"
        return f"{self.model}" + (f" at {self.api_base}" if self.api_base else "")


def parse_args(description: str, **extra: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", help="a real model, e.g. openai/gpt-4o-mini (key from its usual env var)")
    parser.add_argument("--api-base", help="an OpenAI-compatible endpoint for --model")
    for name, kwargs in extra.items():
        parser.add_argument(name, **kwargs)
    return parser.parse_args()


@contextmanager
def endpoint(args: argparse.Namespace) -> Iterator[Endpoint]:
    """The real model when ``--model`` is given, else a stand-in provider running for the block's duration."""
    if args.model:
        yield Endpoint(args.model, args.api_base, None)
        return
    from dspy_tiered_cache.testing.provider import StandInProvider

    with StandInProvider(latency=LATENCY) as provider:
        yield Endpoint(DEFAULT_MODEL, provider.base_url, "sk-stand-in-not-a-real-key", provider)


def upstream(ep: Endpoint, before: int | None = None) -> str:
    """'N upstream calls' for the stand-in (counted by the server itself), '' for a real model."""
    if ep.upstream_calls is None:
        return ""
    return f"{ep.upstream_calls - (before or 0)} upstream calls"
