"""`manage.py model_sizes`: how much disk each registry entry's weights take.

Local and packaged sources are measured on disk; Hub repos are asked of the Hub API,
which answers only when online (each row says why when it cannot).
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from models_api.models import ModelEntry
from models_api.sources import SourceError, disk_size, resolve_local_path


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:.1f} GB"


def hub_size(repo: str, revision: str | None, token: str | None) -> tuple[int | None, str]:
    from inference.sources import is_offline

    if is_offline(settings.GPT3DEV["HF_HUB_OFFLINE"]):
        return None, "offline (HF_HUB_OFFLINE is set): the Hub cannot be asked"
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        info = HfApi(token=token).model_info(repo, revision=revision or None, files_metadata=True)
    except HfHubHTTPError as exc:
        return None, f"the Hub answered an error: {str(exc).splitlines()[0]}"
    except Exception as exc:  # no network: connection errors of several kinds
        return None, f"the Hub cannot be reached ({type(exc).__name__})"
    total = sum(sibling.size or 0 for sibling in info.siblings or [])
    return total, "Hub API"


class Command(BaseCommand):
    help = "Report each registry entry's artifact size (disk for local/package sources, Hub API for Hub repos)."

    def add_arguments(self, parser):
        parser.add_argument("model_ids", nargs="*", help="only these entries")
        parser.add_argument("--token", help="Hugging Face token (default: HF_TOKEN)")

    def handle(self, *args, **options):
        queryset = ModelEntry.objects.all()
        if options["model_ids"]:
            queryset = queryset.filter(model_id__in=options["model_ids"])
        token = options["token"] or settings.GPT3DEV["HF_TOKEN"]
        total = 0
        rows = []
        for entry in queryset:
            if entry.source_type == ModelEntry.SourceType.HUB:
                size, how = hub_size(entry.source, entry.revision, token)
            elif entry.is_upstream:
                size, how = None, "weights live on the upstream servers"
            else:
                try:
                    size, how = disk_size(resolve_local_path(entry.source_type, entry.source)), "on disk"
                except SourceError as exc:
                    size, how = None, str(exc)
            total += size or 0
            rows.append((entry.model_id, human(size) if size is not None else "unknown", how))
        width = max((len(r[0]) for r in rows), default=8)
        self.stdout.write(f"{'model':<{width}}  {'size':>10}  how")
        for model_id, size, how in rows:
            self.stdout.write(f"{model_id:<{width}}  {size:>10}  {how}")
        self.stdout.write(f"{'total known':<{width}}  {human(total):>10}")
