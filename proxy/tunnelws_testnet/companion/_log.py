"""One JSON line per request or tunnel, to a callable or a file.

Records never contain credentials: only the authenticated user name and
whether a ``Proxy-Authorization`` header was present.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import IO, Any, TypeAlias

__all__ = ["LogSink", "ProxyLog"]

LogRecord: TypeAlias = dict[str, Any]
# A callable gets each record as a dict; a path or text file gets JSON lines.
LogSink: TypeAlias = "Callable[[LogRecord], None] | str | os.PathLike[str] | IO[str] | None"


class ProxyLog:
    """Writes records to the configured sink; ``close()`` closes files it opened."""

    def __init__(self, sink: LogSink) -> None:
        self._callback: Callable[[LogRecord], None] | None = None
        self._file: IO[str] | None = None
        self._owns_file = False
        if sink is None:
            return
        if isinstance(sink, (str, os.PathLike)):
            self._file = open(sink, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._owns_file = True
        elif callable(sink):
            self._callback = sink
        else:
            self._file = sink

    def emit(self, event: str, **fields: Any) -> None:
        if self._callback is None and self._file is None:
            return
        record: LogRecord = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
            + f".{int(time.time() * 1000) % 1000:03d}Z",
            "event": event,
            **fields,
        }
        if self._callback is not None:
            self._callback(record)
        if self._file is not None:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._owns_file and self._file is not None:
            self._file.close()
        self._file = None
