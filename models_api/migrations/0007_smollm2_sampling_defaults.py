"""The shipped SmolLM2 row gets the sampling its model card recommends (temperature 0.2,
top_p 0.9): at OpenAI's default temperature of 1 the 135M model answers a plain question
in broken sentences. Only the default row, and only while it has no defaults of its own
(a user's edit is left alone); reversing clears exactly these values."""

from django.db import migrations

MODEL_ID = "SmolLM2-135M-Instruct"
CARD = {"default_temperature": 0.2, "default_top_p": 0.9}
SAMPLING_COLUMNS = (
    "default_temperature", "default_top_p", "default_top_k", "default_min_p", "default_repetition_penalty",
    "default_presence_penalty", "default_frequency_penalty", "default_max_tokens",
)


def set_card_defaults(apps, schema_editor):
    ModelEntry = apps.get_model("models_api", "ModelEntry")
    rows = ModelEntry.objects.filter(model_id=MODEL_ID, origin="default", default_stop=[])
    rows.filter(**{f"{column}__isnull": True for column in SAMPLING_COLUMNS}).update(**CARD)


def clear_card_defaults(apps, schema_editor):
    ModelEntry = apps.get_model("models_api", "ModelEntry")
    ModelEntry.objects.filter(model_id=MODEL_ID, origin="default", **CARD).update(
        **{column: None for column in CARD}
    )


class Migration(migrations.Migration):
    dependencies = [("models_api", "0006_entry_sampling_defaults_and_rerank_task")]
    operations = [migrations.RunPython(set_card_defaults, clear_card_defaults)]
