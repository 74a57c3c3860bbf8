"""The playground page: one template whose scripts call this server's /v1/ API.

The page carries a strict Content-Security-Policy: scripts, styles and requests go to
this origin only, and nothing inline runs. ``PLAYGROUND_ENABLED=0`` turns it into a 404.
"""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.views.decorators.http import require_safe

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)


def playground_enabled() -> bool:
    return bool(settings.GPT3DEV.get("PLAYGROUND_ENABLED", True))


@require_safe
async def playground_page(request: HttpRequest) -> HttpResponse:
    if not playground_enabled():
        raise Http404("The playground is turned off (PLAYGROUND_ENABLED=0).")
    response = HttpResponse(render_to_string("playground/index.html"))
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response["Referrer-Policy"] = "same-origin"
    response["Cache-Control"] = "no-store"
    return response
