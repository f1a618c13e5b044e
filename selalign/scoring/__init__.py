"""Token scorers: how much a response token matters for alignment (higher = keep first).

A scorer reads ``TokenEvidence`` about the chosen or the rejected rows of a step (per-token log-probs of the policy
and of the selecting model, the data's decisive mask) and returns scores [B, T], without gradient; ``select`` keeps
each row's top share. Adding a scorer is one class here plus one yaml in conf/scorer/.
"""

from selalign.scoring.scorers import AbsDiff, ImplicitReward, LogpDiff, Oracle, RandomScore, Scorer

__all__ = ["AbsDiff", "ImplicitReward", "LogpDiff", "Oracle", "RandomScore", "Scorer"]
