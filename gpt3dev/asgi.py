"""The ASGI application: `uvicorn gpt3dev.asgi:application` (and daphne's runserver).

Static files (the admin's and the playground's CSS and JS) are served by WhiteNoise
inside Django's middleware (gpt3dev.staticfiles), so the pages look right with nothing
else in front of the server. SIGTERM drains the process gracefully (gpt3dev.shutdown);
a body over MAX_REQUEST_BYTES is refused before it is read (gpt3dev.bodylimit).
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gpt3dev.settings")

from django.core.asgi import get_asgi_application  # noqa: E402 - needs DJANGO_SETTINGS_MODULE set first

django_application = get_asgi_application()

from gpt3dev.bodylimit import RequestBodyLimit  # noqa: E402 - imports models: Django is set up first
from gpt3dev.shutdown import GracefulASGI  # noqa: E402 - imports models: Django is set up first
from gpt3dev.startup import run_startup  # noqa: E402 - imports models: Django is set up first

run_startup()
# SIGTERM: stop admitting (503), let in-flight answers finish within the grace period, exit.
# MAX_REQUEST_BYTES: a body over the cap is refused before it is read (gpt3dev.bodylimit).
application = GracefulASGI(RequestBodyLimit(django_application))
