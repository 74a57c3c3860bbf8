"""The WSGI application. Streaming answers need ASGI: serve with uvicorn instead."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gpt3dev.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402 - needs DJANGO_SETTINGS_MODULE set first

application = get_wsgi_application()

from gpt3dev.startup import run_startup  # noqa: E402 - imports models: Django is set up first

run_startup()
