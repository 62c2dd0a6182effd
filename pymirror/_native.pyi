"""Type stub of the compiled data plane (native/src/bindings.rs)."""

from typing import Final

SNAPSHOT_SCHEMA: Final[int]
__version__: Final[str]

class Engine:
    """A running data plane: listeners bound, serving the snapshot it was given."""

    def __new__(
        cls,
        snapshot_json: str,
        *,
        worker_threads: int = 0,
        header_read_timeout: float = 30.0,
        max_header_bytes: int = 65536,
        access_log: str | None = None,
        mirror_buffer_budget: int = 268435456,
    ) -> Engine: ...
    @property
    def addresses(self) -> list[str]: ...
    @property
    def running(self) -> bool: ...
    def reload(self, snapshot_json: str) -> None: ...
    def stats_json(self) -> str: ...
    def shutdown(self, drain_seconds: float) -> bool: ...

def validate(snapshot_json: str) -> None: ...
