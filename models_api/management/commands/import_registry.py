"""`manage.py import_registry [PATH]`: import a JSON/YAML registry file of the earlier format."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from models_api.registry_file import RegistryFileError, import_registry, read_registry_file


class Command(BaseCommand):
    help = "Import a JSON or YAML model registry file (default: MODEL_REGISTRY_PATH). Idempotent."

    def add_arguments(self, parser):
        parser.add_argument("path", nargs="?", help="registry file; default: MODEL_REGISTRY_PATH")

    def handle(self, *args, **options):
        path = options["path"] or settings.GPT3DEV["MODEL_REGISTRY_PATH"]
        if not path:
            raise CommandError("Give a registry file path or set MODEL_REGISTRY_PATH.")
        try:
            report = import_registry(read_registry_file(path))
        except RegistryFileError as exc:
            raise CommandError(str(exc)) from None
        for label, ids in (("created", report.created), ("updated", report.updated), ("unchanged", report.unchanged)):
            for model_id in ids:
                self.stdout.write(f"{label:>9}  {model_id}")
        self.stdout.write(self.style.SUCCESS(f"Imported {path}: {report.summary()}."))
