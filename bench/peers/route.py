"""What every proxy is asked to do, whatever its configuration language."""

from __future__ import annotations

import os
from dataclasses import dataclass

from peers.tls import TlsFiles

#: Data-plane threads or worker processes for every proxy: one per core, as pymirror's
#: default. nginx gets as many worker processes, Envoy `--concurrency` as many.
WORKERS = os.cpu_count() or 1


@dataclass(frozen=True)
class Route:
    """Serve every request from `primary`; copy `percent` of them to `mirror`."""

    primary: str
    mirror: str | None = None
    percent: float = 100.0
    compare: float = 0.0
    """Percentage of copies whose answer is compared with the primary's (pymirror only);
    0: off."""
    tls_in: TlsFiles | None = None
    """Serve clients HTTPS with this certificate."""
    tls_out: TlsFiles | None = None
    """Reach v1 and v2 over HTTPS, verifying their certificate against this CA."""

    @property
    def per_million(self) -> int:
        """The share as Envoy's FractionalPercent with denominator MILLION."""
        return round(self.percent * 10_000)
