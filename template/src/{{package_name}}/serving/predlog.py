"""An optional prediction log: one JSON line per request, written by a background thread, rotated by size.

Requests never wait for the disk: a record goes into a bounded queue, and when the writer falls behind
records are dropped (and counted) rather than slowing predictions down.
"""

from __future__ import annotations

import itertools
import json
import logging
import logging.handlers
import queue
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

_instances = itertools.count()


class _DroppingQueueHandler(logging.handlers.QueueHandler):
    """put_nowait instead of put: a full queue drops the record instead of blocking the request."""

    def __init__(self, records: queue.Queue[Any]) -> None:
        super().__init__(records)
        self.dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record  # formatting (json.dumps) happens in the writer thread, not in the request

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1  # handle() holds the handler's lock: no lost updates


class _Listener(logging.handlers.QueueListener):
    def enqueue_sentinel(self) -> None:
        # blocking: the stdlib's put_nowait raises queue.Full on a full queue
        self.queue.put(self._sentinel)  # type: ignore[attr-defined]


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        time = datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
        line: dict[str, Any] = record.msg  # type: ignore[assignment]  # PredictionLog.record logs a dict
        return json.dumps({"time": time.replace("+00:00", "Z"), **line}, default=_plain)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (anything with tolist), else str: a log line must never fail to be written."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


class PredictionLog:
    """JSON lines at path, rotated at max_bytes, keeping `backups` old files (path.1 is the newest)."""

    def __init__(self, path: Path, *, max_bytes: int = 10_000_000, backups: int = 3, queue_size: int = 10_000) -> None:
        if max_bytes < 1 or backups < 1 or queue_size < 1:
            raise ValueError("max_bytes, backups and queue_size must be at least 1")
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            writer = logging.handlers.RotatingFileHandler(
                self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
            )  # opens the file now: an unwritable path fails at start-up, not on the first request
        except OSError as error:
            raise OSError(f"{self.path}: cannot write the prediction log ({error.strerror or error})") from error
        writer.setFormatter(_JsonLines())
        self._writer = writer
        self._handler = _DroppingQueueHandler(queue.Queue(queue_size))
        self._listener = _Listener(self._handler.queue, writer)
        # A logger of its own that does not propagate: prediction lines never reach the server's log.
        self._logger = logging.getLogger(f"{__name__}.{next(_instances)}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        self._logger.addHandler(self._handler)
        self._closed = False
        self._listener.start()

    def record(
        self, *, n_rows: int, n_features: int, predictions: list[Any], latency_ms: float, model_sha256: str
    ) -> None:
        """Never blocks: enqueue one JSON line; if the queue is full the record is dropped and counted."""
        if self._closed:
            return
        line = {
            "input_shape": [n_rows, n_features],
            "output": predictions,
            "latency_ms": round(float(latency_ms), 3),
            "model_sha256": model_sha256,
        }
        self._logger.info(line)

    @property
    def dropped(self) -> int:
        return self._handler.dropped

    def close(self) -> None:
        """Write what is queued, then stop the writer thread and close the file (safe to call twice)."""
        if self._closed:
            return
        self._closed = True
        self._logger.removeHandler(self._handler)
        self._listener.stop()
        self._writer.close()
        self._handler.close()
