"""Health probes: /healthz says the process is up, /readyz whether models can be served."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse

from models_api.readiness import readiness_report, start_upstream_health_checks


async def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


async def readyz(request: HttpRequest) -> JsonResponse:
    await start_upstream_health_checks()
    report = await sync_to_async(readiness_report)()
    return JsonResponse(report, status=200 if report["ready"] else 503)
