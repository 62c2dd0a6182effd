"""Noise filtering in Diffy's manner: which differing fields are regressions.

With a second primary (`compare.secondPrimary`), each compared request is answered by
the primary (v1), the mirror (v2) and a second instance of the primary (v1'). Per
endpoint and field, `n2` pairs v1/v2 were compared and the field differed in `x2`;
`n1` pairs v1/v1' and it differed in `x1`. The rule:

- a field that never differed between the two primaries (`x1 == 0`) is a regression
  (nothing says v1 disagrees with itself there);
- a field that did is noise, unless its v1/v2 rate exceeds its v1/v1' rate by a margin
  a two-proportion z-test calls significant at `SIGMA` (3) standard errors, one-sided,
  with at least `MIN_PAIRS` (20) pairs on each side. So a timestamp that differs on
  every answer of both is noise however many pairs there are (p1 = p2 = 1), while a
  field that differs in 2% of v1/v1' pairs and 40% of v1/v2 pairs is a regression.

Without a second primary every differing field is a regression, as before.
"""

from __future__ import annotations

import math

#: Standard errors by which v1/v2's rate must exceed v1/v1''s (one-sided, ~0.13% false
#: alarms per field under the null hypothesis).
SIGMA = 3.0
#: Pairs needed on each side before a field seen between the two primaries is
#: promoted from noise to regression: below it the test has no power worth trusting.
MIN_PAIRS = 20

REGRESSION = "regression"
NOISE = "noise"


def z_score(x2: int, n2: int, x1: int, n1: int) -> float:
    """Two-proportion z statistic of p2 = x2/n2 over p1 = x1/n1 (pooled variance); 0
    when either side is empty or the pooled rate is 0 or 1 (no evidence either way)."""
    if n1 <= 0 or n2 <= 0:
        return 0.0
    pooled = (x1 + x2) / (n1 + n2)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if var <= 0:
        return 0.0
    return (x2 / n2 - x1 / n1) / math.sqrt(var)


def classify(x2: int, n2: int, x1: int, n1: int) -> str:
    """`regression` or `noise`, by the rule above."""
    if x1 == 0:
        return REGRESSION
    if n1 < MIN_PAIRS or n2 < MIN_PAIRS:
        return NOISE
    return REGRESSION if z_score(x2, n2, x1, n1) >= SIGMA else NOISE
