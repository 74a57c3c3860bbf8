"""The composition root: settings, URLs, the ASGI/WSGI entry points and their wrappers
(request body limit, graceful shutdown, static files), start-up and the health probes.
It imports the apps; nothing imports it (``tests/test_layering.py`` checks it)."""
