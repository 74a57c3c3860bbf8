"""Static files (the admin's and the playground's CSS and JS) served by WhiteNoise.

WhiteNoise's own middleware is synchronous only: in Django's ASGI stack it would push
every request, streams included, through a thread. :class:`StaticFilesMiddleware` keeps
WhiteNoise's file table, headers (ETag, Cache-Control, gzip variants, ranges) and
settings, and is natively sync and async like this project's other middleware; under
ASGI the file is read on a worker thread, so the event loop never blocks on disk.

Files come from ``STATIC_ROOT`` once ``manage.py collectstatic`` has filled it (``make
run`` and the Docker image do), else straight from each app's ``static/`` folder
(``WHITENOISE_USE_FINDERS`` in settings).
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest
from whitenoise.middleware import WhiteNoiseMiddleware


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        with warnings.catch_warnings():
            # An empty STATIC_ROOT is expected until collectstatic runs; the finders serve.
            warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)
            super().__init__(get_response)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request: HttpRequest):
        if self.autorefresh:  # DEBUG: look on disk for every request
            static_file = await sync_to_async(self.find_file, thread_sensitive=False)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is None:
            return await self.get_response(request)
        response = await sync_to_async(self.serve, thread_sensitive=False)(static_file, request)
        response.streaming_content = _read_in_thread(response.streaming_content)
        return response


async def _read_in_thread(chunks) -> AsyncIterator[bytes]:
    """A FileResponse's blocks, read on a worker thread (static files are small)."""
    for chunk in await sync_to_async(list, thread_sensitive=False)(chunks):
        yield chunk
