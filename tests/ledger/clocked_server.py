"""`python -m tests.ledger.clocked_server --port N`: the real server (uvicorn, the same
application) whose quota and ledger clock reads the unix time written in the file named
by ``CLOCK_FILE`` (the real time while the file is empty or absent), so an end-to-end
test can move the server to the next day without sleeping. Test-only: the product has
no such hook."""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime
from pathlib import Path


def frozen_time() -> float:
    try:
        return float(Path(os.environ["CLOCK_FILE"]).read_text().strip())
    except (OSError, ValueError):
        return time.time()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gpt3dev.settings")
    import django

    django.setup()
    from access import quotas
    from ledger import recorder

    quotas.now = lambda: datetime.fromtimestamp(frozen_time(), UTC)
    recorder.now = frozen_time
    import uvicorn

    uvicorn.run("gpt3dev.asgi:application", host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
