"""The line-protocol file sink: `--output FILE.lp` (or `-` for stdout) instead of InfluxDB."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from typing import BinaryIO

from archiver.errors import ConfigError, PermanentError
from archiver.sinks.base import DEFAULT_RP, Precision, RetentionPolicy, WriteResult

STDOUT = "-"


class FileSink:
    """Line protocol into a file or stdout instead of InfluxDB: one line a point, one run a file.

    Several jobs write at once: each `write()` appends its lines whole, under a lock, and is
    flushed (and fsynced for a file) before it returns, so a checkpoint never passes data that
    is not in the file.
    """

    def __init__(self, stream: BinaryIO, *, name: str, is_file: bool) -> None:
        self.name = name
        self._stream = stream
        self._is_file = is_file
        self._lock = threading.Lock()
        self._precision: Precision | None = None

    @classmethod
    def open(cls, output: str) -> FileSink:
        """`-` is stdout; any other name must end in `.lp` and is truncated."""
        if output == STDOUT:
            return cls(sys.stdout.buffer, name="stdout", is_file=False)
        if not output.endswith(".lp"):
            raise ConfigError(f"--output {output}: give a file name ending in .lp, or - for stdout")
        try:
            stream = open(output, "wb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise ConfigError(f"--output {output}: cannot write it: {exc.strerror}") from None
        return cls(stream, name=output, is_file=True)

    def ping(self) -> str:
        return "file"

    def ensure_target(
        self, database: str, retention_policy: str | None, retention_duration: str | None
    ) -> RetentionPolicy:
        return RetentionPolicy(retention_policy or DEFAULT_RP, None, retention_policy is None)

    def write(
        self,
        database: str,
        retention_policy: str | None,
        lines: Sequence[str],
        precision: Precision = "s",
    ) -> WriteResult:
        data = "".join(f"{line}\n" for line in lines).encode()
        with self._lock:
            # A line-protocol file has one precision (`influx write --precision`).
            if self._precision not in (None, precision):
                raise PermanentError(
                    f"{self.name} already holds timestamps in {self._precision}, not {precision}:"
                    " write events queries and aggregate queries to separate files (--query)"
                )
            self._precision = precision
            try:
                self._stream.write(data)
                self._stream.flush()
                if self._is_file:
                    os.fsync(self._stream.fileno())
            except OSError as exc:
                raise PermanentError(
                    f"cannot write line protocol to {self.name}: {exc.strerror or exc}"
                ) from None
        return WriteResult(len(lines), dropped_beyond_retention=0, requests=0, retries=0)

    def close(self) -> None:
        with self._lock:
            if self._is_file:
                self._stream.close()
            else:
                self._stream.flush()

    def __enter__(self) -> FileSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
