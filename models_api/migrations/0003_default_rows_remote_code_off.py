"""The earlier Hub models of the default registry ship with trust_remote_code off.

They had it on with no pinned revision: enabling such a row would run whatever Python
the repository holds on the day it is downloaded. A superuser who wants one turns the
flag on (ideally with a revision pinned). Rows a user has pinned or edited to a
revision are left alone."""

from django.db import migrations

EARLIER_HUB_IDS = [
    "GPT4-dev-177M-1511-Instruct",
    "GPT4-dev-177M-1511",
    "GPT3-dev-350m-2805",
    "GPT3-dev-125m-0104",
    "GPT3-dev-125m-1202",
    "GPT3-dev-125m-0612",
    "GPT3-dev",
    "GPT3-dev-125m",
]


def remote_code_off(apps, schema_editor):
    ModelEntry = apps.get_model("models_api", "ModelEntry")
    ModelEntry.objects.filter(
        model_id__in=EARLIER_HUB_IDS, origin="default", trust_remote_code=True, revision=""
    ).update(trust_remote_code=False)


class Migration(migrations.Migration):
    dependencies = [("models_api", "0002_default_registry")]
    operations = [migrations.RunPython(remote_code_off, migrations.RunPython.noop)]
