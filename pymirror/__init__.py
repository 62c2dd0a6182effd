"""pymirror: a traffic-shadowing proxy. Python control plane, Rust data plane.

Every request is served by the primary destination; a sampled copy goes to a mirror
whose answer is dropped. The public API is what `__all__` lists.
"""

from pymirror._native import __version__
from pymirror.admin import Admin
from pymirror.config import Config, ConfigError, load_config
from pymirror.engine import ServerOptions, Stats
from pymirror.errors import (
    EngineError,
    ListenError,
    PymirrorError,
    ReloadError,
    SnapshotError,
)
from pymirror.lifecycle import serve, serve_forever
from pymirror.proxy import Proxy

__all__ = [
    "Admin",
    "Config",
    "ConfigError",
    "EngineError",
    "ListenError",
    "Proxy",
    "PymirrorError",
    "ReloadError",
    "ServerOptions",
    "SnapshotError",
    "Stats",
    "__version__",
    "load_config",
    "serve",
    "serve_forever",
]
