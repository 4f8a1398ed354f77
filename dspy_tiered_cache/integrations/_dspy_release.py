"""What differs between the DSPy 3.x releases the DSPy door supports (3.0.0-3.4.x), read once from DSPy itself.

Each fact is probed from the installed DSPy's own API (a signature, a module attribute), never from its version
string, so a patch release that back-ports a feature is handled too:

* engines: 3.4 added ``dspy.LM(engine=...)`` (native lm15 or LiteLLM) and ``dspy.clients.execution.prepare``;
  3.0-3.3 always call LiteLLM, and their ``request_cache`` keys on ``dict(model, messages, **kwargs)``;
* ``LM.aclose`` (closing the engines' connection pools) exists from 3.4;
* saved state: 3.4's ``dump_state`` records the LM class (``_dspy_lm_class``) and its default ``load()`` accepts
  only ``dspy.LM``; 3.0-3.3 record no class and load every LM as ``dspy.LM(**state)``;
* ``load(..., allow_unsafe_lm_state=...)`` and the dropping of ``api_base`` from loaded LM state came in 3.2.
"""

from __future__ import annotations

import inspect
from importlib import metadata

import dspy

DSPY_VERSION: str = metadata.version("dspy")
#: ``dspy.LM(engine=...)`` exists (3.4+); before, every call goes through LiteLLM.
HAS_ENGINES: bool = "engine" in inspect.signature(dspy.LM.__init__).parameters
#: ``LM.aclose()`` exists (3.4+).
HAS_ACLOSE: bool = callable(getattr(dspy.LM, "aclose", None))
#: The key in ``LM.dump_state()`` naming the LM class (3.4+).
LM_CLASS_STATE_KEY = "_dspy_lm_class"
RECORDS_LM_CLASS: bool = LM_CLASS_STATE_KEY in dspy.LM("openai/dtc-probe").dump_state()
#: ``Module.load(path, allow_unsafe_lm_state=...)`` exists (3.2+); without it, loaded LMs keep ``api_base``.
HAS_SAFE_LOAD: bool = "allow_unsafe_lm_state" in inspect.signature(dspy.Module.load).parameters
