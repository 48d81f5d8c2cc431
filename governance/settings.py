"""Mandate settings, read from the environment (12-factor).

Every variable is documented in docs/configuration.md. With nothing set, Mandate runs
on the embedded default: SQLite under ``var/`` and a filesystem Celery broker.
"""

import json
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("MANDATE_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)

_DEV_SECRET_KEY = "mandate-insecure-development-key-do-not-use-in-production"
SECRET_KEY = env.str("SECRET_KEY", default=_DEV_SECRET_KEY if DEBUG else "")
if not SECRET_KEY:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off (see docs/configuration.md)")

PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8080").rstrip("/")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[PUBLIC_BASE_URL])

_https = PUBLIC_BASE_URL.startswith("https://")
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=_https)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=_https)
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if env.bool("SECURE_PROXY_SSL_HEADER", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "evidence",
    "governance",
    "controlplane",
    "envelopes",
    "entitlements",
]

GOOGLE_CLIENT_ID = env.str("GOOGLE_CLIENT_ID", default="")
GOOGLE_CLIENT_SECRET = env.str("GOOGLE_CLIENT_SECRET", default="")
if GOOGLE_CLIENT_ID:
    INSTALLED_APPS.append("allauth.socialaccount.providers.google")
    SOCIALACCOUNT_PROVIDERS = {
        "google": {
            "APPS": [{"client_id": GOOGLE_CLIENT_ID, "secret": GOOGLE_CLIENT_SECRET, "key": ""}],
            "SCOPE": ["openid", "profile", "email"],
        }
    }

MIDDLEWARE = [
    "governance.middleware.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "governance.middleware.APIBodyLimitMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "governance.middleware.PasswordChangeRequiredMiddleware",
    "governance.middleware.APIErrorMiddleware",
]

ROOT_URLCONF = "governance.urls"
ASGI_APPLICATION = "governance.asgi.application"
WSGI_APPLICATION = "governance.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

# --- Database -------------------------------------------------------------------------
DATABASE_URL = env.str("DATABASE_URL", default="")
if DATABASE_URL:
    _db = env.db_url_config(DATABASE_URL)
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    _db = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(VAR_DIR / "mandate.sqlite3")}

if _db["ENGINE"] == "django.db.backends.sqlite3":
    _db["OPTIONS"] = {
        # Writers take the lock up front, so concurrent appends queue instead of failing.
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif _db["ENGINE"] in ("django.db.backends.postgresql", "django.db.backends.postgresql_psycopg2"):
    _db["ENGINE"] = "django.db.backends.postgresql"
    # Under ASGI, persistent per-thread connections leak; a pool returns them per request.
    if env.bool("DB_POOL", default=True):
        _db.setdefault("OPTIONS", {})["pool"] = {
            "min_size": env.int("DB_POOL_MIN_SIZE", default=2),
            "max_size": env.int("DB_POOL_MAX_SIZE", default=20),
            # With the database down a request waits this long for a connection, then
            # answers 503 (docs/reliability.md). CONN_HEALTH_CHECKS (below) makes Django give
            # the pool its ``check``: a connection the server ended is replaced when taken.
            "timeout": env.float("DB_POOL_TIMEOUT", default=1.5),
        }
        _db["OPTIONS"].setdefault("connect_timeout", 2)
        _db["CONN_MAX_AGE"] = 0
    else:
        _db["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0)
_db.setdefault("CONN_HEALTH_CHECKS", True)
DATABASES = {"default": _db}
# Migrations run as the schema's owner, the app as a role that may only append evidence
# (docs/deployment.md): the same database, other credentials, used by migrate and grant_app_role.
DATABASE_MIGRATE_URL = env.str("DATABASE_MIGRATE_URL", default="")
MANDATE_OWNER_DATABASE = "migrate" if DATABASE_MIGRATE_URL else "default"
if DATABASE_MIGRATE_URL:
    DATABASES["migrate"] = {
        **env.db_url_config(DATABASE_MIGRATE_URL),
        "ENGINE": _db["ENGINE"],
        "CONN_MAX_AGE": 0,
        "TEST": {"MIRROR": "default"},
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, cache and Celery ----------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "governance.cache.DegradingRedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 2, "visibility_timeout": 3600}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CELERY_BROKER_DIR = VAR_DIR / "celery-broker"
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR),
        "data_folder_out": str(CELERY_BROKER_DIR),
        "control_folder": str(VAR_DIR / "celery-control"),
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TIMEZONE = "UTC"
# Keep each worker process's database connection for this many tasks: Celery's Django fixup
# otherwise opens a fresh PostgreSQL connection per task (webhook throughput drops ~4x).
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)
# Beat keeps its schedule here whatever the database (with PostgreSQL and Redis too).
VAR_DIR.mkdir(parents=True, exist_ok=True)
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "evidence-verify-ledger": {
        "task": "evidence.verify_ledger",
        "schedule": env.float("LEDGER_VERIFY_INTERVAL_SECONDS", default=3600.0),
    },
    # Re-enqueues webhook deliveries whose task was lost (broker restart, worker killed).
    "envelopes-sweep-deliveries": {"task": "envelopes.sweep_deliveries", "schedule": 30.0},
    # Applies agents' request timeouts (on_timeout) within 60 s of expires_at; a tick not run
    # within its interval is dropped (the next one does the same work).
    "envelopes-apply-timeouts": {"task": "envelopes.apply_timeouts", "schedule": 15.0, "options": {"expires": 15}},
    # Expires held actions (the gate's approvals) past their expires_at, as the timeouts above.
    "envelopes-gate-expire-approvals": {
        "task": "envelopes.gate_expire_approvals",
        "schedule": 15.0,
        "options": {"expires": 15},
    },
    # Deletes Sign-In with Ethereum nonces past their expiry (docs/wallets.md).
    "governance-purge-siwe-nonces": {"task": "governance.purge_siwe_nonces", "schedule": 3600.0},
    # Parks devices whose availability lease expired (docs/installs.md).
    "governance-park-expired-devices": {
        "task": "governance.park_expired_devices",
        "schedule": env.float("MANDATE_DEVICE_PARK_INTERVAL_SECONDS", default=60.0),
        "options": {"expires": 60},
    },
}

# --- Auth ------------------------------------------------------------------------------
AUTH_USER_MODEL = "governance.Person"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/admin/"
ACCOUNT_LOGIN_METHODS = {"username"}
ACCOUNT_SIGNUP_FIELDS = ["username*", "password1*", "password2*"]
ACCOUNT_ADAPTER = "governance.adapters.MandateAccountAdapter"
SOCIALACCOUNT_ADAPTER = "governance.adapters.MandateSocialAccountAdapter"
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_LOGOUT_ON_GET = False

# "token" (default): every API call needs a credential. "open": local experiments only.
MANDATE_AUTH_MODE = env.str("MANDATE_AUTH_MODE", default="token")
# Evaluation: "permissive" (process_id optional) or "enforced" (process_id required).
MANDATE_STRUCTURAL_MODE = env.str("MANDATE_STRUCTURAL_MODE", default="permissive")
# Plain POST /v1/evaluate requests are answered in front of Django on Postgres
# (envelopes/evaluation/fastroute.py); its thread pool per server process keeps one connection per thread.
MANDATE_EVALUATE_FAST_ROUTE = env.bool("MANDATE_EVALUATE_FAST_ROUTE", default=True)
MANDATE_EVALUATE_THREADS = env.int("MANDATE_EVALUATE_THREADS", default=16)
# Most evaluations the route records with one statement and one commit (1: each commits alone).
MANDATE_EVALUATE_GROUP_COMMIT = env.int("MANDATE_EVALUATE_GROUP_COMMIT", default=64)
# Outbound webhooks to loopback/private/link-local/metadata addresses are refused unless on
# (make run and the tests turn it on: their receivers run on 127.0.0.1).
MANDATE_WEBHOOK_ALLOW_PRIVATE = env.bool("MANDATE_WEBHOOK_ALLOW_PRIVATE", default=False)
# The action gate's outbound calls (builtin:http_api, WASM mandate.http) to loopback/private/
# link-local addresses are refused unless on (cloud metadata always is): envelopes/gate/providers/egress.py.
MANDATE_EGRESS_ALLOW_PRIVATE = env.bool("MANDATE_EGRESS_ALLOW_PRIVATE", default=False)
# Delays (seconds) before the 2nd, 3rd... webhook attempts; after the last one, failed.
MANDATE_WEBHOOK_RETRY_SCHEDULE = env.list(
    "MANDATE_WEBHOOK_RETRY_SCHEDULE", cast=float, default=[60, 300, 900, 3600, 21600]
)
MANDATE_WEBHOOK_TIMEOUT_SECONDS = env.float("MANDATE_WEBHOOK_TIMEOUT_SECONDS", default=10.0)
# A pending delivery this overdue lost its task (worker or Redis restart): the sweeper re-sends it.
MANDATE_WEBHOOK_SWEEP_GRACE_SECONDS = env.float("MANDATE_WEBHOOK_SWEEP_GRACE_SECONDS", default=60.0)
# Long-poll waiters re-read their request this often (seconds) even when no notification
# arrives: the fallback for decisions made in another process without Redis pub/sub.
MANDATE_LONGPOLL_RECHECK_SECONDS = env.float("MANDATE_LONGPOLL_RECHECK_SECONDS", default=5.0)
# The inbox's live stream (docs/inbox.md): a keepalive comment this often (seconds), which also
# re-checks the session and the inbox; after MANDATE_INBOX_STREAM_SECONDS the stream ends
# and the browser opens a new one.
MANDATE_INBOX_KEEPALIVE_SECONDS = env.float("MANDATE_INBOX_KEEPALIVE_SECONDS", default=15.0)
MANDATE_INBOX_STREAM_SECONDS = env.float("MANDATE_INBOX_STREAM_SECONDS", default=600.0)
# The action gate's catalogue and policy (docs/gate.md): manifests (YAML) and their WASM
# modules, and the Rego; both are read at the first start and by each reload.
MANDATE_ACTIONS_DIR = Path(env.str("MANDATE_ACTIONS_DIR", default=str(BASE_DIR / "controlplane" / "gate" / "actions")))
MANDATE_GATE_POLICY_FILE = Path(
    env.str("MANDATE_GATE_POLICY_FILE", default=str(BASE_DIR / "controlplane" / "gate" / "policy.rego"))
)
# How often (seconds) a process checks whether another one changed the gate's configuration.
MANDATE_GATE_CONFIG_RECHECK_SECONDS = env.float("MANDATE_GATE_CONFIG_RECHECK_SECONDS", default=1.0)
# Operator endpoints of the gate: token buckets per process (requests per second).
MANDATE_GATE_OPERATOR_WRITE_RATE = env.float("MANDATE_GATE_OPERATOR_WRITE_RATE", default=20.0)
MANDATE_GATE_OPERATOR_READ_RATE = env.float("MANDATE_GATE_OPERATOR_READ_RATE", default=100.0)
# The organization that open mode and organization-less superusers act in.
MANDATE_DEFAULT_ORGANIZATION = env.str("MANDATE_DEFAULT_ORGANIZATION", default="demo")
# Key that encrypts secrets Mandate must be able to read back (signing keys, webhook secrets).
MANDATE_ENCRYPTION_KEY = env.str("MANDATE_ENCRYPTION_KEY", default="")
# --- Entitlements and seals (docs/entitlements.md) ---
# X-GBX-ADMIN-TOKEN for issuing in the default organization: the token's SHA-256, hex (never
# the token itself). Per-organization tokens are made in the admin (Issuance tokens).
MANDATE_GBX_ADMIN_TOKEN_SHA256 = env.str("MANDATE_GBX_ADMIN_TOKEN_SHA256", default="").strip().lower()
# A rerun granted by redeeming a seal stays usable at least this many days.
MANDATE_GBX_RERUN_DAYS = env.int("MANDATE_GBX_RERUN_DAYS", default=30)
# Plain POST /api/entitlement/consume requests with a Mandate token are answered in front of
# Django on Postgres (entitlements/fastroute.py), up to this many consumes per statement and commit.
MANDATE_GBX_CONSUME_FAST_ROUTE = env.bool("MANDATE_GBX_CONSUME_FAST_ROUTE", default=True)
MANDATE_GBX_CONSUME_GROUP_COMMIT = env.int("MANDATE_GBX_CONSUME_GROUP_COMMIT", default=64)
# --- The action gate (docs/gate.md) ---
# Leases without a credential (any scope, self-named agent): local development only.
MANDATE_GATE_OPEN_LEASES = env.bool("MANDATE_GATE_OPEN_LEASES", default=False)
# Lease lifetime; clamped to 1..3600 s. LatchGate's SDKs renew when under 60 s remain.
MANDATE_GATE_LEASE_TTL_SECONDS = env.int("MANDATE_GATE_LEASE_TTL_SECONDS", default=300)
# POST /v1/leases per server process and second (a token bucket with a one-second burst).
MANDATE_GATE_LEASE_RATE_PER_SECOND = env.float("MANDATE_GATE_LEASE_RATE_PER_SECOND", default=50.0)
# Action executions per server process and second (a token bucket); beyond: 429.
MANDATE_GATE_EXECUTE_RATE_PER_SECOND = env.float("MANDATE_GATE_EXECUTE_RATE_PER_SECOND", default=5000.0)
# Where builtin:fs works: one directory per organization below this.
MANDATE_GATE_FS_ROOT = env.str("MANDATE_GATE_FS_ROOT", default=str(VAR_DIR / "gate-fs"))
# How long a held action waits for a person before it expires.
MANDATE_GATE_APPROVAL_TTL_SECONDS = env.int("MANDATE_GATE_APPROVAL_TTL_SECONDS", default=3600)
# OpenID Connect issuers whose ID tokens are API credentials (docs/oidc.md): a JSON list of
# {"issuer", "audience" (string or list), "jwks_url" | "jwks_file", "name"?}. Empty: none trusted.
# Entries are checked at start-up (governance.services.oidc.trusted_issuers).
try:
    MANDATE_OIDC_ISSUERS = json.loads(env.str("MANDATE_OIDC_ISSUERS", default="[]"))
except ValueError as exc:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(f"MANDATE_OIDC_ISSUERS is not JSON: {exc}") from None
# --- Wallet sessions: Sign-In with Ethereum, EIP-4361 (docs/wallets.md) ---
# The domain a SIWE message must name; empty: PUBLIC_BASE_URL's host[:port].
MANDATE_SIWE_DOMAIN = env.str("MANDATE_SIWE_DOMAIN", default="")
# EIP-155 chain ids a message may name.
MANDATE_SIWE_CHAIN_IDS = env.list("MANDATE_SIWE_CHAIN_IDS", cast=int, default=[1])
# How long an issued nonce may be used; a used one never again.
MANDATE_SIWE_NONCE_TTL_SECONDS = env.int("MANDATE_SIWE_NONCE_TTL_SECONDS", default=300)
# Tolerated clock difference for a message's Issued At and Not Before.
MANDATE_SIWE_CLOCK_SKEW_SECONDS = env.int("MANDATE_SIWE_CLOCK_SKEW_SECONDS", default=60)
# A wallet session's lifetime (shortened to the message's Expiration Time when earlier).
MANDATE_WALLET_SESSION_TTL_SECONDS = env.int("MANDATE_WALLET_SESSION_TTL_SECONDS", default=86400)
# JSON-RPC endpoint for EIP-1271 contract-wallet signatures; empty: only EOA signatures verify.
MANDATE_WEB3_RPC_URL = env.str("MANDATE_WEB3_RPC_URL", default="")
MANDATE_WEB3_RPC_TIMEOUT_SECONDS = env.float("MANDATE_WEB3_RPC_TIMEOUT_SECONDS", default=5.0)
# --- Governed runtime installs (docs/installs.md) ---
# The plan of the status entitlement ("governance") an ownership wallet must hold, active.
MANDATE_GOVERNANCE_PLAN_ID = env.str("MANDATE_GOVERNANCE_PLAN_ID", default="governance")
MANDATE_INSTALL_TOKEN_TTL_SECONDS = env.int("MANDATE_INSTALL_TOKEN_TTL_SECONDS", default=900)
# A device's availability lease: how long a heartbeat keeps it active.
MANDATE_DEVICE_LEASE_SECONDS = env.int("MANDATE_DEVICE_LEASE_SECONDS", default=30 * 86400)
# How far ahead an offline renewal bundle may renew device leases (docs/renewals.md).
MANDATE_RENEWAL_MAX_DAYS = env.int("MANDATE_RENEWAL_MAX_DAYS", default=400)
# Plain heartbeats are answered on the hot path on Postgres (docs/device_leases.md): an active
# governance entitlement is taken from memory when read at most this long ago; most heartbeats
# refreshed with one statement and one commit (1: each alone).
MANDATE_HEARTBEAT_FAST_ROUTE = env.bool("MANDATE_HEARTBEAT_FAST_ROUTE", default=True)
MANDATE_HEARTBEAT_CACHE_SECONDS = env.float("MANDATE_HEARTBEAT_CACHE_SECONDS", default=1.0)
MANDATE_HEARTBEAT_GROUP_COMMIT = env.int("MANDATE_HEARTBEAT_GROUP_COMMIT", default=64)
# Default request body limit for API routes; views may set max_body_bytes.
MANDATE_MAX_BODY_BYTES = env.int("MANDATE_MAX_BODY_BYTES", default=1024 * 1024)
MANDATE_API_PREFIXES = ("/v1/", "/api/", "/governance/", "/auth/", "/.well-known/")
DATA_UPLOAD_MAX_MEMORY_SIZE = None  # enforced per endpoint by APIBodyLimitMiddleware

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "governance.api.authentication.BearerTokenAuthentication",
        "envelopes.requests.api.authentication.ChannelKeyAuthentication",
        "governance.api.authentication.DPoPOperatorAuthentication",
        "governance.api.authentication.SessionAuthentication",
        "governance.api.authentication.OpenModeAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["governance.api.permissions.IsAuthenticatedPrincipal"],
    "DEFAULT_PARSER_CLASSES": ["governance.api.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "governance.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Mandate API",
    "DESCRIPTION": "Governance for AI agents: authority, approvals, action gating, entitlements, evidence.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Open mode is a local-experiment switch, not a security scheme clients should use.
    "AUTHENTICATION_WHITELIST": [
        "governance.api.authentication.BearerTokenAuthentication",
        "envelopes.requests.api.authentication.ChannelKeyAuthentication",
        "governance.api.authentication.DPoPOperatorAuthentication",
        "governance.api.authentication.LeaseAuthentication",
        "governance.api.authentication.OIDCAuthentication",
        "governance.api.authentication.SessionAuthentication",
    ],
    "ENUM_NAME_OVERRIDES": {
        "ConsequenceTypeEnum": ["monetary", "risk_rating"],
        "RiskRatingEnum": "controlplane.choices.RiskRating",
        "EnvelopeStateEnum": "envelopes.choices.EnvelopeState",
        "OutcomeEnum": "envelopes.choices.Outcome",
        "RequestTypeEnum": "envelopes.choices.RequestType",
        "RequestStatusEnum": "envelopes.choices.RequestStatus",
    },
}

# --- I18N, static ----------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# One date format across the console (governance/formats/en/formats.py).
FORMAT_MODULE_PATH = ["governance.formats"]
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
SERVE_STATIC = env.bool("SERVE_STATIC", default=True)

EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="mandate@localhost")

# --- Logging: one JSON object per line -------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "governance.logging.JSONFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.server": {"level": "WARNING"},
        "django.request": {"level": "ERROR"},
        "uvicorn.access": {"level": "WARNING"},
        # httpx logs every request's full URL at INFO: for the gate's outbound calls that is
        # agents' data, one line per execution.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}
