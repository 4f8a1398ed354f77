"""OpenTelemetry: one span per cached call, saying which tier served it, printed by ``ConsoleSpanExporter``.

The cache emits spans only when an OpenTelemetry SDK is configured (``pip install 'dspy-tiered-cache[otel]'``);
without one every call pays a single provider check. Spans nest under whatever span is current (here the
application's own ``answer-batch`` span), carry ``cache.door``, ``cache.level`` (l1, disk, l2, joined, miss,
bypass), ``cache.hit``, a short secret-free ``cache.key_hash`` and ``cache.tokens_saved``; never a prompt or a key.

    python examples/otel_console.py                       # local stand-in provider, no key needed
    python examples/otel_console.py --model openai/gpt-4o-mini   # real model (OPENAI_API_KEY)

Swap ``ConsoleSpanExporter`` for an OTLP exporter to send the same spans to Jaeger, Tempo, Honeycomb...
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from _common import endpoint, parse_args
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

warnings.filterwarnings("ignore", category=DeprecationWarning)


def one_line(span: ReadableSpan) -> str:
    """A compact rendering (the default is one JSON document per span)."""
    attrs = dict(span.attributes or {})
    cache = " ".join(f"{k.removeprefix('cache.')}={v}" for k, v in sorted(attrs.items()) if k.startswith("cache."))
    millis = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
    indent = "  └ " if span.parent is not None else ""
    return f"{indent}{span.name:<30} {millis:8.2f} ms  {cache}{os.linesep}"


def main() -> None:
    args = parse_args(__doc__ or "")
    provider = TracerProvider(resource=Resource.create({"service.name": "otel-console-example"}))
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(formatter=one_line)))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("example")

    import dspy

    from dspy_tiered_cache.core import CacheCore
    from dspy_tiered_cache.decorator import cached
    from dspy_tiered_cache.integrations.dspy import CachedLM

    with endpoint(args) as ep, tempfile.TemporaryDirectory() as tmp:
        core = CacheCore(disk_path=Path(tmp) / "cache.sqlite3")
        lm = CachedLM(dspy.LM(ep.model, api_base=ep.api_base, api_key=ep.api_key, num_retries=0), core)
        qa = dspy.Predict("question -> answer")

        @cached(core=core, namespace="word-counts")
        def count_words(text: str) -> dict[str, Any]:
            return {"words": len(text.split())}

        print(f"model: {ep.describe()}")
        for batch in ("cold", "warm"):
            print(f"\n--- {batch} batch: spans as they end ---")
            with tracer.start_as_current_span("answer-batch"), dspy.context(lm=lm):
                for question in ("What is OpenTelemetry?", "What is a span?"):
                    qa(question=question)
                    count_words(question)
        core.flush()
    provider.shutdown()


if __name__ == "__main__":
    main()
