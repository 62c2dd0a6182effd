"""Comparing primary and mirror answers, in the control plane.

The core captures compared copies and queues the pairs (`native/src/body/capture.rs`,
`native/src/mirror/compare.rs`);
`runner` drains them in batches off the request path; `diff` compares one pair;
`store` keeps bounded figures and samples per endpoint; `report` renders them.
Everything but `runner` is plain Python over plain data, tested without sockets.
"""

from pymirror.compare.diff import Difference, Outcome, Settings, compare
from pymirror.compare.store import Store
from pymirror.compare.template import endpoint

__all__ = ["Difference", "Outcome", "Settings", "Store", "compare", "endpoint"]
