"""Logging to stdout, as text or JSON lines, with every known secret redacted.

Secrets are redacted from the rendered text (message and traceback) before it is serialised,
so a key that slipped into an exception message, a URL or a library's debug line never
reaches the output. A secret is redacted in every form it can take in text: as it is,
JSON-escaped, as Python's `repr` shows it, and URL-encoded.

Log lines are written through `tqdm.write`, so on a terminal they appear above the progress
bar instead of inside it. A reader that goes away (`nr-archiver run | head -2`) silences the
log quietly instead of printing a traceback for every line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import quote, quote_plus

REDACTED = "***"
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
_lock = threading.Lock()


def secret_forms(value: str) -> set[str]:
    """Every text form `value` takes in output: raw, JSON-escaped, repr, URL-encoded."""
    forms = {
        value,
        json.dumps(value)[1:-1],  # ASCII-only JSON (\uXXXX)
        json.dumps(value, ensure_ascii=False)[1:-1],
        repr(value)[1:-1],
        # repr inside a longer string that holds both quote characters escapes the single one
        repr("\"'" + value)[4:-1],
        quote(value, safe=""),
        quote(value),
        quote_plus(value, safe=""),
    }
    return {form for form in forms if form}


def register_secret(value: str) -> None:
    """Redact `value` (in each of its forms) from every log line and one-line error from now on."""
    global _pattern
    if value and len(value) >= 4:
        with _lock:
            _secrets.update(secret_forms(value))
            longest_first = sorted(_secrets, key=len, reverse=True)
            _pattern = re.compile("|".join(map(re.escape, longest_first)))


def redact(text: str) -> str:
    pattern = _pattern
    return pattern.sub(REDACTED, text) if pattern is not None else text


def _redacted(value: Any) -> Any:
    """`value` with every string in it redacted (dicts and lists too); other values as they are."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_redacted(v) for v in value]
    if isinstance(value, bool | int | float) or value is None:
        return value
    return redact(str(value))


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: `time`, `level`, `logger`, `message`, plus the record's fields.

    Fields are what the call passed with `extra={"query": ..., "points": ...}`; every string is
    redacted before the line is serialised.
    """

    STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in self.STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(_redacted(entry), ensure_ascii=False)


class TqdmAwareHandler(logging.StreamHandler):
    """Writes each line through `tqdm.write` once tqdm is loaded: a progress bar is cleared, the
    line written above it, the bar drawn again. Only a bar on a terminal loads tqdm
    (`pipeline.progress`); without it there is no bar and the line is written as it is. On a
    closed pipe the stream is pointed at the null device once, quietly (Python's advice for
    SIGPIPE), and the program goes on."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            bars = sys.modules.get("tqdm")
            if bars is None:
                self.stream.write(message + self.terminator)
            else:
                bars.tqdm.write(message, file=self.stream)
            self.flush()
        except BrokenPipeError:
            silence(self.stream)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def silence(stream: TextIO) -> None:
    """Point `stream`'s file descriptor at the null device (its reader went away)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def setup(level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Log to stdout (the container's log), or to `stream` (stderr when stdout carries data)."""
    handler = TqdmAwareHandler(stream or sys.stdout)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            RedactingFormatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%dT%H:%M:%S%z")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if level != "DEBUG":
        for chatty in ("urllib3", "alembic"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
