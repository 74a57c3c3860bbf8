"""Logging filters the settings' LOGGING dict names (imported while logging is set up,
so nothing here imports Django or the apps).

:class:`OneLineWarning` turns an expected refusal that Django logs at ERROR with a
traceback (a request with a ``Host`` outside ``ALLOWED_HOSTS``) into one warning line:
any client can send such a header, so a traceback per request would drown the log, and
the access log already has the request's 400.
"""

from __future__ import annotations

import logging


class OneLineWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True
