"""Evaluation entry point: `python -m selalign.evaluate` (or `selalign-eval`) with Hydra overrides.

Compose the config; check that the benchmark's judge can work (key, endpoint, model) before anything expensive;
load what the evaluation needs (the policy in memory only when the generator or the evaluation reads it, its
tokenizer, the preference data when ``data`` is set); run the configured benchmark with the configured generator;
save ``metrics.json`` and ``config.yaml`` into the run dir. API keys are read from the environment at request time
only; the config holds the variable's name, never the key.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from selalign.benchmarks import EvalContext
import selalign.resolvers  # noqa: F401  registers the config resolvers of conf/
from selalign.loggers import silence_known_noise
from selalign.models import load_tokenizer
from selalign.report import print_run_summary

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Run the evaluation described by ``cfg``; returns the flat metrics also written to metrics.json."""
    silence_known_noise()
    if not cfg.benchmark:
        raise ValueError("benchmark=none has nothing to evaluate; choose one, e.g. benchmark=mt_bench")
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    benchmark = hydra.utils.instantiate(cfg.benchmark)  # config errors surface here, before any model is loaded
    generator = hydra.utils.instantiate(cfg.generator)
    if hasattr(benchmark, "preflight"):
        benchmark.preflight()  # a judge without its key or endpoint fails now, not after every answer is generated
    in_memory = generator.needs_model or not getattr(benchmark, "policy_through_generator", False)
    tokenizer = None
    if in_memory or generator.needs_tokenizer or cfg.get("data"):
        tokenizer = load_tokenizer(cfg.model.name_or_path, trust_remote_code=cfg.model.trust_remote_code)
    datamodule = None
    if cfg.get("data"):
        datamodule = hydra.utils.instantiate(cfg.data, tokenizer=tokenizer, output_dir=str(run_dir))
        datamodule.setup("validate")
    policy = hydra.utils.instantiate(cfg.model).to("cuda" if torch.cuda.is_available() else "cpu") if in_memory else None
    context = EvalContext(policy, tokenizer, run_dir, cfg.model, cfg.ref_model, cfg.start_model, datamodule, cfg.seed, generator)

    started = time.perf_counter()
    metrics = {name: float(value) for name, value in benchmark.evaluate(context).items()}
    seconds = time.perf_counter() - started
    if generator.generated_tokens:  # answers read from the cache cost no generation
        log.info("generated %d tokens in %.1f s: %.0f tokens per second", generator.generated_tokens, seconds, generator.generated_tokens / seconds)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    print_run_summary(evaluate(cfg), Path(cfg.paths.output_dir))


if __name__ == "__main__":
    main()
