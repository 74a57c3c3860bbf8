"""Django settings, read from the environment in this one module.

The variable names are the ones users of the earlier FastAPI version already know
(HF_TOKEN, DEFAULT_DEVICE, MODEL_REGISTRY_PATH, ...); docs/settings.md documents every one.
The defaults are safe for production: DEBUG off, SQLite unless DATABASE_URL is given.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

import dj_database_url

from gpt3dev.env import env_bool, env_choice, env_int, env_list, env_memory, env_str
from inference.scheduling_policy import SchedulerLimits  # torch-free: the scheduler defaults
from inference.sources import default_cache_dir  # torch-free

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("GPT3DEV_VAR_DIR", str(BASE_DIR / "var")))


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept in var/."""
    key = env_str("SECRET_KEY")
    if key:
        return key
    path = VAR_DIR / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(50)
        path.write_text(key)
        path.chmod(0o600)
        return key


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS") or ["127.0.0.1", "localhost", "[::1]"]
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    # daphne first: its runserver serves the ASGI application, so `manage.py runserver`
    # streams SSE just like uvicorn does.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "corsheaders",
    "models_api",
    "access",
    "completions",
    "embeddings",
    "rerank",
    "responses",
    "ledger",
    "playground",
]

MIDDLEWARE = [
    # Outermost: sees every request's real end (a stream's last byte) for the access
    # log and the request metrics.
    "observability.accesslog.AccessLogMiddleware",
    "core.middleware.OpenAIErrorMiddleware",
    "gpt3dev.shutdown.DrainMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # WhiteNoise's file table behind a natively async middleware (gpt3dev.staticfiles).
    "gpt3dev.staticfiles.StaticFilesMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    # After CORS, so preflights never need a key and a 401 still carries CORS headers.
    "access.middleware.APIKeyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "gpt3dev.urls"
ASGI_APPLICATION = "gpt3dev.asgi.application"
WSGI_APPLICATION = "gpt3dev.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0, minimum=0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several server processes (and the usage ledger's writer thread) share one file:
    # wait for the write lock instead of failing at once, and let readers run beside a
    # writer. A transaction takes the write lock when it begins (IMMEDIATE): one that
    # began as a reader and then wrote after another connection's commit would fail at
    # once with "database is locked", whatever the timeout (an admin save while
    # requests were being recorded answered 500 that way).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # collectstatic also writes gzip copies, which WhiteNoise serves to clients that take them.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Served by WhiteNoise (gpt3dev.staticfiles): from STATIC_ROOT once `collectstatic` has
# filled it (`make run` and the Docker image do), else from each app's static/ folder, so
# a server started any other way still has its CSS and JS.
WHITENOISE_USE_FINDERS = DEBUG or not (STATIC_ROOT / "playground").is_dir()

# Request bodies: a bigger body is a 413 with an OpenAI error.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MAX_REQUEST_BYTES", 10 * 1024 * 1024, minimum=1024)

# Behind TLS (directly or through a proxy that sets X-Forwarded-Proto): secure cookies,
# HSTS and redirects, which `check --deploy` asks for.
if env_bool("SECURE_HTTPS", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 3600, minimum=0)
X_FRAME_OPTIONS = "DENY"

# CORS: a comma-separated list of origins, or "*" for any.
_cors = env_list("CORS_ALLOW_ORIGINS")
CORS_ALLOW_ALL_ORIGINS = "*" in _cors
CORS_ALLOWED_ORIGINS = [origin for origin in _cors if origin != "*"]
CORS_URLS_REGEX = r"^/(v1/|v2/rerank|tokenize|detokenize|rerank|score|healthz|readyz).*$"

# The product's own settings, in one namespaced dict (read through gpt3dev.conf).
GPT3DEV = {
    "HF_TOKEN": env_str("HF_TOKEN") or env_str("HUGGING_FACE_HUB_TOKEN"),
    "DEFAULT_DEVICE": env_choice("DEFAULT_DEVICE", "auto", ("auto", "cpu", "cuda", "mps")),
    # What dtype "auto" means for a model on the CPU (docs/models.md: "dtype, device and determinism").
    "CPU_DTYPE": env_choice("CPU_DTYPE", "float32", ("float32", "bfloat16", "int8", "int4")),
    "MAX_CONTEXT_TOKENS": env_int("MAX_CONTEXT_TOKENS", 2048, minimum=1),
    "MODEL_REGISTRY_PATH": env_str("MODEL_REGISTRY_PATH"),
    "MODEL_ALLOW_LIST": env_list("MODEL_ALLOW_LIST"),
    "INCLUDE_DEFAULT_MODELS": env_bool("INCLUDE_DEFAULT_MODELS", True),
    "ENABLE_EMBEDDINGS_BACKEND": env_bool("ENABLE_EMBEDDINGS_BACKEND", True),
    # Registry rows' sampling defaults (temperature, top_p, ...) for requests that leave a
    # field out; 0: OpenAI's defaults exactly, whatever the rows say.
    "MODEL_SAMPLING_DEFAULTS": env_bool("MODEL_SAMPLING_DEFAULTS", True),
    # Documents in one /v1/rerank request (pairs in one /score request).
    "MAX_RERANK_DOCUMENTS": env_int("MAX_RERANK_DOCUMENTS", 1000, minimum=1),
    "MODEL_CACHE_DIR": default_cache_dir(),
    "MAX_LOADED_MODELS": env_int("MAX_LOADED_MODELS", 4, minimum=1),
    "MAX_BATCH_SIZE": env_int("MAX_BATCH_SIZE", SchedulerLimits.max_batch_size, minimum=1),
    "MAX_QUEUE": env_int("MAX_QUEUE", SchedulerLimits.max_queue, minimum=1),
    "MAX_N": env_int("MAX_N", 16, minimum=1),
    "KV_CACHE_MEMORY": env_memory("KV_CACHE_MEMORY", "2GiB"),  # bytes, or a fraction of free memory
    # Tokens per forward while streams decode, and while none does.
    "MAX_STEP_TOKENS": env_int("MAX_STEP_TOKENS", SchedulerLimits.max_step_tokens, minimum=1),
    "MAX_PREFILL_TOKENS": env_int("MAX_PREFILL_TOKENS", SchedulerLimits.max_prefill_tokens, minimum=1),
    "ADMISSION_SKIP_SECONDS": env_int("ADMISSION_SKIP_SECONDS", int(SchedulerLimits.max_skip_s), minimum=0),
    "PRELOAD_MODELS": env_list("PRELOAD_MODELS"),
    # The one offline flag of the web side (the engine library also honours the variables itself).
    "HF_HUB_OFFLINE": env_bool("HF_HUB_OFFLINE", False) or env_bool("TRANSFORMERS_OFFLINE", False),
    "MAX_PROMPT_TOKENS": env_int("MAX_PROMPT_TOKENS", 0, minimum=0),  # 0: the context window only
    # Cheap caps checked right after the JSON is parsed, before validation and tokenising.
    "MAX_PROMPTS": env_int("MAX_PROMPTS", 256, minimum=1),  # prompts in one /v1/completions request
    "MAX_MESSAGES": env_int("MAX_MESSAGES", 1024, minimum=1),  # messages in one chat request
    "MAX_INPUT_CHARS": env_int("MAX_INPUT_CHARS", 2_000_000, minimum=1),  # text characters in one request
    # Longest a grammar (a JSON schema, regex, choice list, Lark grammar) may take to
    # compile before the request is a 400; compiled grammars are cached.
    "GRAMMAR_COMPILE_TIMEOUT": env_int("GRAMMAR_COMPILE_TIMEOUT", 10, minimum=1),
    # Checked before compiling: the source's size, and how deep the compiler would recurse
    # (objects, arrays, $refs, Lark rules: inference.grammar_checks). Deeper than a few
    # thousand levels overflows llguidance's stack and kills the process.
    "GRAMMAR_MAX_BYTES": env_int("GRAMMAR_MAX_BYTES", 256 * 1024, minimum=1),
    "GRAMMAR_MAX_DEPTH": env_int("GRAMMAR_MAX_DEPTH", 2500, minimum=1),
    # Compiles running at once per model, and waiting for a worker (beyond: a 429).
    "GRAMMAR_COMPILE_WORKERS": env_int("GRAMMAR_COMPILE_WORKERS", 2, minimum=1),
    "GRAMMAR_COMPILE_QUEUE": env_int("GRAMMAR_COMPILE_QUEUE", 16, minimum=0),
    # A grammar whose compile timed out is refused at once for this long (0: not remembered).
    "GRAMMAR_REFUSE_SECONDS": env_int("GRAMMAR_REFUSE_SECONDS", 600, minimum=0),
    # CPU time one sequence's grammar mask may take in one decode step; past it the
    # request ends with an error (0: no limit).
    "GRAMMAR_MASK_BUDGET_MS": env_int("GRAMMAR_MASK_BUDGET_MS", 50, minimum=0),
    # Local model sources must resolve inside one of these folders.
    "MODEL_LOCAL_ROOTS": [
        Path(root).expanduser()
        for root in (env_list("MODEL_LOCAL_ROOTS") or [str(Path.home()), "/models", str(VAR_DIR)])
    ],
    # Access control and limits (see access/).
    "API_KEYS": env_list("API_KEYS"),  # "name:key" (or a bare key), comma-separated
    "REQUIRE_API_KEY": env_bool("REQUIRE_API_KEY", False),
    "RATE_LIMIT_RPM": env_int("RATE_LIMIT_RPM", 0, minimum=0),  # per key; 0: unlimited
    "RATE_LIMIT_TPM": env_int("RATE_LIMIT_TPM", 0, minimum=0),
    # Names (from API_KEYS) of the keys that may read every key's usage (stored keys: the admin box).
    "ADMIN_KEY_NAMES": env_list("ADMIN_KEY_NAMES"),
    # The usage ledger (see ledger/): hourly rows kept this many days.
    "USAGE_RETENTION_DAYS": env_int("USAGE_RETENTION_DAYS", 400, minimum=1),
    # Each process writes its pending usage sums this often (0: every request when it ends).
    "USAGE_FLUSH_SECONDS": env_int("USAGE_FLUSH_SECONDS", 1, minimum=0),
    # Observability and shutdown.
    "ACCESS_LOG_FORMAT": env_choice("ACCESS_LOG_FORMAT", "plain", ("plain", "json", "off")),
    "ACCESS_LOG_PROMPTS": env_bool("ACCESS_LOG_PROMPTS", False),
    "METRICS_ENABLED": env_bool("METRICS_ENABLED", True),
    "SHUTDOWN_GRACE_SECONDS": env_int("SHUTDOWN_GRACE_SECONDS", 30, minimum=0),
    # The browser playground at /playground/ (see playground/).
    # Upstream rows (source_type "upstream"): failover and health checks.
    "UPSTREAM_CONNECT_TIMEOUT": env_int("UPSTREAM_CONNECT_TIMEOUT", 5, minimum=1),  # seconds
    "UPSTREAM_HEALTH_INTERVAL": env_int("UPSTREAM_HEALTH_INTERVAL", 5, minimum=1),  # seconds between checks
    "UPSTREAM_HEALTH_TIMEOUT": env_int("UPSTREAM_HEALTH_TIMEOUT", 3, minimum=1),  # seconds a check may take
    "UPSTREAM_MAX_FAILS": env_int("UPSTREAM_MAX_FAILS", 1, minimum=1),  # failures in a row that eject
    # Upstream rows: what the gateway may reach, reserve and hold (see upstream/urlpolicy.py).
    "UPSTREAM_ALLOWED_HOSTS": env_list("UPSTREAM_ALLOWED_HOSTS"),  # loopback/private hosts, IPs, CIDRs
    "UPSTREAM_DEFAULT_MAX_TOKENS": env_int("UPSTREAM_DEFAULT_MAX_TOKENS", 4096, minimum=1),  # TPM reservation
    "UPSTREAM_MAX_RESPONSE_BYTES": env_int("UPSTREAM_MAX_RESPONSE_BYTES", 8 * 1024 * 1024, minimum=65536),
    "PLAYGROUND_ENABLED": env_bool("PLAYGROUND_ENABLED", True),
    # Stored /v1/responses (see responses/): kept this many days, and at most this many rows.
    "RESPONSES_RETENTION_DAYS": env_int("RESPONSES_RETENTION_DAYS", 30, minimum=1),
    "RESPONSES_MAX_STORED": env_int("RESPONSES_MAX_STORED", 100_000, minimum=1),
}

LOG_LEVEL = env_choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")).upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "bare": {"format": "%(message)s"},
    },
    "filters": {"one_line_warning": {"()": "observability.logfilters.OneLineWarning"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "access": {"class": "logging.StreamHandler", "formatter": "bare"},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        # Django logs every 4xx as a warning; our access log says what matters.
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
        # A Host outside ALLOWED_HOSTS: one warning line, no traceback (any client can send one).
        "django.security.DisallowedHost": {
            "handlers": ["console"], "level": "WARNING", "filters": ["one_line_warning"], "propagate": False,
        },
        # One line per request, written as-is (plain text or JSON, ACCESS_LOG_FORMAT).
        "gpt3dev.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        # The upstream client's own line per call repeats the access log (upstream.pool
        # logs ejections and failures).
        "httpx": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        "httpcore": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}
logging.captureWarnings(True)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
