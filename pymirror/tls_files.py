"""The TLS files a configuration reads, and a fingerprint of their content.

Kubernetes mounts a secret as symlinks into a `..data` directory that it swaps whole on
an update, which file-event watches (inotify on the named files) miss. So the running
proxy polls: every few seconds it hashes the files' content, and a change is a reload
(the same as SIGHUP), which reads them again."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from pymirror.config import Config

#: Seconds between two looks at the TLS files, unless told otherwise.
DEFAULT_POLL_SECONDS = 5.0


def tls_files(config: Config) -> list[str]:
    """Every certificate, key, CA and CRL file the listeners and the destinations' TLS
    read, in order, each once."""
    files: list[str] = []
    for listener in config.listeners:
        if listener.tls is None:
            continue
        files += [p for e in listener.tls.entries() for p in (e.certificate, e.private_key)]
        if listener.tls.ca_certificates is not None:
            files.append(listener.tls.ca_certificates)
    for service in config.services.values():
        files += [p for tls in service.tls_settings() for p in tls.files()]
    return list(dict.fromkeys(files))


def fingerprint(paths: Iterable[str]) -> str:
    """A hash of the files' content (through symlinks); a file that cannot be read counts
    as its error, so its return is a change too."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.encode() + b"\0")
        try:
            digest.update(Path(path).read_bytes())
        except OSError as exc:
            digest.update(f"unreadable: {exc.strerror}".encode())
        digest.update(b"\0")
    return digest.hexdigest()
