"""Logging: loguru on stderr, as text for people or as one JSON object per line for containers.

What may appear: appointment, clinic and key ids, states, error classes and Google's reason
codes. What never appears: patient names, phone numbers, emails, notes, tokens. Log calls name
ids only, tracebacks are rendered without variable values, and the libraries that log whole
payloads at DEBUG through the standard `logging` module (realtime, httpx, websockets) are held
at WARNING whatever the daemon's own level.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from typing import TYPE_CHECKING, Any, Literal

from loguru import logger
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from loguru import Record

LogFormat = Literal["text", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
TEXT_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {message}"
# Third-party loggers that would print request and message bodies at DEBUG or INFO.
CHATTY_LIBRARIES = ("realtime", "httpx", "httpcore", "websockets", "hpack", "googleapiclient", "urllib3", "apscheduler")


class LogSettings(BaseSettings):
    """LOG_FORMAT and LOG_LEVEL alone (environment or `.env`), so that every command logs as configured, including
    those that read no other setting of the daemon's (`migrate` needs only DATABASE_URL)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    log_format: LogFormat = "text"
    log_level: LogLevel = "INFO"


def configure_logging(level: str = "INFO", log_format: LogFormat = "text") -> None:
    """Replace loguru's default sink with the daemon's. Safe to call again (tests, subcommands)."""
    logger.remove()
    if log_format == "json":
        logger.add(_write_json, level=level, backtrace=False, diagnose=False)
    else:
        logger.add(_CurrentStderr(), level=level, format=TEXT_FORMAT, backtrace=False, diagnose=False)
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)


class _CurrentStderr:
    """sys.stderr as it is at each write, not as it was when logging was configured: a command run in-process
    (tests, an embedding program) may swap it, and the old stream may be closed by then."""

    def write(self, text: str) -> None:
        sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def _write_json(message: Any) -> None:
    sys.stderr.write(json.dumps(json_record(message.record), default=str) + "\n")
    sys.stderr.flush()


def json_record(record: Record) -> dict[str, Any]:
    """The fields of one JSON log line: time, level, message, where, bound ids, and an exception
    as type and a traceback of file/line/function only."""
    line: dict[str, Any] = {
        "time": record["time"].isoformat(),
        "level": record["level"].name,
        "message": record["message"],
        "logger": record["name"],
        "function": record["function"],
    }
    line.update({key: value for key, value in record["extra"].items() if not key.startswith("_")})
    exception = record["exception"]
    if exception is not None and exception.type is not None:
        line["exception"] = {
            "type": exception.type.__name__,
            # Frames only: no exception message (it can quote a row) and no local variables.
            "traceback": [
                f"{frame.filename}:{frame.lineno} in {frame.name}"
                for frame in traceback.extract_tb(exception.traceback)
            ],
        }
    return line
