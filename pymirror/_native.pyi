"""Type stub of the compiled data plane (native/src/bindings.rs), checked against the built
extension by `python3 -m mypy.stubtest pymirror._native`."""

from typing import Any, Final, final

__all__ = ["SNAPSHOT_SCHEMA", "Engine", "__version__", "regex_problem", "validate"]

SNAPSHOT_SCHEMA: Final[int]
__version__: Final[str]

@final
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
        access_log_fields: list[str] | None = None,
        # The core's constants (the extension shows them as `...`): 256 MiB, 4096, 64 MiB.
        mirror_buffer_budget: int = ...,
        compare_queue_capacity: int = ...,
        compare_buffer_budget: int = ...,
        reuse_port: bool = False,
    ) -> Engine: ...
    @property
    def addresses(self) -> list[str]: ...
    @property
    def running(self) -> bool: ...
    def reload(self, snapshot_json: str) -> None: ...
    def stats_json(self) -> str: ...
    def drain_compared(self, max: int = 1024) -> list[dict[str, Any]]: ...
    def shutdown(self, drain_seconds: float) -> bool: ...
    def cut_drain(self) -> None: ...
    def reopen_access_log(self) -> None: ...

def validate(snapshot_json: str) -> None: ...
def regex_problem(pattern: str) -> str | None: ...
