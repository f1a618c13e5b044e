"""Token scorers: how much a response token matters for alignment (higher = keep first).

A scorer maps per-token log-probs of the policy and the reference, [B, T] each, to scores [B, T].
It is told whether the rows are chosen or rejected responses, since the paper's score flips sign.
Scores are computed without gradient. Adding a scorer is one class here plus one yaml in conf/scorer/.
"""

from selalign.scoring.scorers import AbsDiff, LogpDiff, RandomScore, Scorer

__all__ = ["AbsDiff", "LogpDiff", "RandomScore", "Scorer"]
