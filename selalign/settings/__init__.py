"""Settings: where preference pairs, models and a gold judge come from (the offline world, SmolLM2 sentiment)."""
