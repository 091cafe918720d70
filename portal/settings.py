"""Settings for the BrowserPhone portal.

Everything is read from the environment through the small typed helpers below, with defaults that
need no setup at all (SQLite under var/, in-memory channel layer, Celery eager, sipworker in the web
process).  Production sets DATABASE_URL, REDIS_URL, SECRET_KEY, SIP_PASSWORD_KEY and ALLOWED_HOSTS.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from phone.worker.loop import LOOPS as SIPWORKER_LOOPS

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))
# Holds the SQLite file and collected static files; WhiteNoise warns when its root is missing.
(VAR_DIR / "staticfiles").mkdir(parents=True, exist_ok=True)


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {value!r}")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from exc


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return list(default or [])
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", default=True)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    # Only ever used on a developer's machine: DEBUG is on and nothing secret lives there.
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production-0123456789abcdef"

# Fernet key(s) that encrypt SIP passwords at rest.  Comma-separated: the first encrypts, all
# decrypt, so a key can be rotated.  Without one (development only) a key is derived from
# SECRET_KEY in portal.crypto.
SIP_PASSWORD_KEYS = env_list("SIP_PASSWORD_KEY")
if not SIP_PASSWORD_KEYS and not DEBUG:
    raise ImproperlyConfigured("SIP_PASSWORD_KEY must be set when DEBUG is off")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "template_partials",
    "axes",
    "import_export",
    "celery_progress",
    "csp",
    "portal",
    "phone",
    "cti",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    # NUL characters (400) and huge query strings (414) never reach a view or the database.
    "portal.guards.RequestGuardMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "portal.middleware.PortalLocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a lockout into a response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"

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
                "django.template.context_processors.i18n",
            ],
        },
    },
]

WSGI_APPLICATION = None
ASGI_APPLICATION = "portal.asgi.application"

DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "db.sqlite3",
            # A file, not memory, so that a server process started by end-to-end tests sees it.
            "TEST": {"NAME": VAR_DIR / "test.sqlite3"},
        }
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite however it is named (the embedded default, or DATABASE_URL=sqlite:///...) serves
    # HTTP, WebSockets, the sipworker and background tasks from the threads of one process:
    # wait for the write lock rather than failing with "database is locked", take it when a
    # transaction starts (no deadlock upgrading a read), and write-ahead logging, so that
    # readers (pages, logins) never wait for a writer (a CSV import) nor the writer for them.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL",
        **DATABASES["default"].get("OPTIONS", {}),
    }
    _sqlite_name = Path(DATABASES["default"]["NAME"])
    if str(_sqlite_name) != ":memory:":  # tests on a file too (test-<name> next to it)
        DATABASES["default"].setdefault("TEST", {}).setdefault(
            "NAME", _sqlite_name.with_name(f"test-{_sqlite_name.name}")
        )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    # django-axes first, so a locked-out login never reaches the password check.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "phone:index"
LOGOUT_REDIRECT_URL = "login"

# Login throttling (django-axes): lock a username+address pair after this many failures.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = env_int("LOGIN_COOLOFF_MINUTES", 15) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# Reverse proxies in front of daphne (nginx, a load balancer ...), each appending the address it
# received the request from to X-Forwarded-For.  0: no proxy, the client is REMOTE_ADDR and the
# header is ignored (anyone can send it).  README: "Behind a reverse proxy".
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)
if TRUSTED_PROXY_COUNT < 0:
    raise ImproperlyConfigured("TRUSTED_PROXY_COUNT must be 0 or more")


def axes_client_address(trusted_proxies: int) -> tuple[list[str], int | None]:
    """Where django-axes (via django-ipware) reads the client address: (headers, proxy count)."""
    if not trusted_proxies:
        return ["REMOTE_ADDR"], None
    # ipware counts the proxies *listed* in the header; the nearest one is REMOTE_ADDR, not
    # listed.  The client is then the entry our outermost proxy appended, counted from the right:
    # whatever a client writes into the header itself stays to the left of it.
    return ["HTTP_X_FORWARDED_FOR"], trusted_proxies - 1


AXES_IPWARE_META_PRECEDENCE_ORDER, AXES_IPWARE_PROXY_COUNT = axes_client_address(
    TRUSTED_PROXY_COUNT
)
AXES_IPWARE_PROXY_ORDER = "left-most"  # with a proxy count: counted from the right end
# A client's own proxy may add entries on the left: skip them rather than distrust the header.
IPWARE_STRICT = False
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "portal/locked_out.html"
AXES_VERBOSE = False

LANGUAGE_CODE = "ja"
LANGUAGES = [("ja", "日本語"), ("en", "English")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env_str("TIME_ZONE", "Asia/Tokyo")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# Channel layer and Celery: Redis when REDIS_URL is set, in-process otherwise.
REDIS_URL = env_str("REDIS_URL")


def redis_channel_layer(url: str) -> dict:
    return {
        "BACKEND": "portal.channel_layer.RedisChannelLayer",
        # redis-py 8 times a socket out after 5 s, exactly as long as channels_redis blocks
        # waiting for a message: an idle channel would fail every 5 s. Read longer.
        "CONFIG": {
            "hosts": [{"address": url, "socket_timeout": 30}],
            # Every page's messages for the sipworker share one channel: room for bursts
            # (a restart of the web tier reconnects every open page at once). The same holds
            # the other way: channels_redis counts a process-local channel's capacity on the
            # process's one inbox ("specific.<process>!"), which all the pages a web process
            # serves share, so its default of 100 dropped messages when a sipworker answered
            # 50 pages attaching at once (registration, dnd, calls ... each), and a page that
            # lost its "registered" waited for it for good.
            "channel_capacity": {"sipworker*": 10000, "specific.*": 10000},
        },
    }


# Django's cache holds small shared facts, e.g. the sipworkers' last heartbeats that /healthz
# and /metrics read (portal.health): Redis when the processes are separate, else this process.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "browserphone",
            # A Redis that stops answering must not hold a health check or a heartbeat long.
            "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

if REDIS_URL:
    CHANNEL_LAYERS = {"default": redis_channel_layer(REDIS_URL)}
    CELERY_BROKER_URL = REDIS_URL
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CELERY_BROKER_URL = "memory://localhost/"
    # The in-memory queue is polled: a task starts within 50 ms of being queued.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"polling_interval": 0.05}
    # The one worker is a thread of this process: nobody to send it remote-control commands.
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
# Tasks never run inline (not even in the embedded default): a webhook that does not answer
# must not hold the call path or a request (portal.background).
CELERY_TASK_ALWAYS_EAGER = False
# Without REDIS_URL a Celery worker runs inside this process, in daemon threads, started by the
# first task queued (portal.background); with Redis, `celery -A portal worker` processes do.
BACKGROUND_EMBEDDED_WORKER = env_bool("BACKGROUND_EMBEDDED_WORKER", default=not REDIS_URL)
BACKGROUND_THREADS = env_int("BACKGROUND_THREADS", 4)
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", REDIS_URL or "cache+memory://")

# CSV exports: django-import-export's own escaping only deletes a leading "=" (it corrupts the
# value and leaves + - @ tab CR formulas live), so it stays off; phone.resources.export_csv
# prefixes every cell starting with = + - @ tab or CR with a single quote instead (OWASP).
IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT = False

# Content-Security-Policy (django-csp) on every response: scripts, styles and connections from
# this site only, no inline script or style, no plugins, not framed.  A stored URL that slipped
# past validation cannot run as javascript: either.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# Webhook receivers on the internal network that may be called (host names or IP literals);
# every other host must resolve to public addresses only (portal.urlsafety).
WEBHOOK_ALLOWED_HOSTS = env_list("WEBHOOK_ALLOWED_HOSTS")

# Telephony.
# The sipworker runs inside the web process unless a separate `manage.py sipworker` is used.
SIPWORKER_EMBEDDED = env_bool("SIPWORKER_EMBEDDED", default=not REDIS_URL)
# Seconds a user's line stays registered after their last phone page closed.
SIPWORKER_RELEASE_SECONDS = env_int("SIPWORKER_RELEASE_SECONDS", 30)
SIP_BIND_ADDRESS = env_str("SIP_BIND_ADDRESS", "127.0.0.1")
# REGISTER expiry asked of the PBX: short enough that a line left behind by a killed process
# (the embedded default cannot unregister on SIGKILL) lapses within minutes.
SIP_REGISTER_EXPIRES = env_int("SIP_REGISTER_EXPIRES", 300)
# OPTIONS keepalive to the PBX every this many seconds: a PBX that stops answering turns the
# lamp red within about twice this plus the timeout, instead of at the next refresh (0: off).
SIP_KEEPALIVE_SECONDS = env_int("SIP_KEEPALIVE_SECONDS", 2)
SIP_KEEPALIVE_TIMEOUT = env_int("SIP_KEEPALIVE_TIMEOUT", 4)
# Re-registration after a failure backs off (with jitter) up to this many seconds.
SIP_REREGISTER_MAX_SECONDS = env_int("SIP_REREGISTER_MAX_SECONDS", 8)
# The address our SDP announces for RTP (where the PBX sends audio); the bind address if empty.
MEDIA_ADDRESS = env_str("MEDIA_ADDRESS")
RTP_PORT_MIN = env_int("RTP_PORT_MIN", 20000)
RTP_PORT_MAX = env_int("RTP_PORT_MAX", 29999)
if not (0 < RTP_PORT_MIN < RTP_PORT_MAX <= 65535):
    raise ImproperlyConfigured("RTP_PORT_MIN must be below RTP_PORT_MAX, both within 1-65535")
# WebRTC ICE servers for the browser and for aiortc, e.g. "stun:stun.example.net:3478".
# Empty by default: this product runs on company networks, and aiortc must never reach out to a
# public STUN server on its own (design.md §1).
ICE_SERVERS = env_list("ICE_SERVERS")
# Which host candidates the sipworker's WebRTC side offers (phone.media_network.configure_ice,
# applied at sipworker start). ICE_HOST_ADDRESSES: exactly these addresses (127.0.0.1 allowed,
# which aioice otherwise leaves out); else every interface address, but only of the interfaces
# in ICE_INTERFACES when set, and never of those in ICE_IGNORE_INTERFACES ("docker0", "br-*").
ICE_HOST_ADDRESSES = env_list("ICE_HOST_ADDRESSES")
ICE_INTERFACES = env_list("ICE_INTERFACES")
ICE_IGNORE_INTERFACES = env_list("ICE_IGNORE_INTERFACES")
# Behind a 1:1 NAT (a cloud VM with a public IP): "10.0.0.5=203.0.113.7" pairs, comma-separated,
# or one public IP for every IPv4 host candidate. Each mapped host candidate gets a server-
# reflexive twin with the public address and the same port, as STUN would have found.
ICE_NAT_1TO1 = env_list("ICE_NAT_1TO1")
# TURN for browsers that cannot reach the sipworker directly (coturn, deploy/coturn): URLs like
# "turn:turn.example.jp:3478?transport=udp", and coturn's static-auth-secret. Each phone page
# gets credentials valid for TURN_TTL seconds (TURN REST API: "expiry:user" + HMAC-SHA1), never
# the secret itself.
TURN_URLS = env_list("TURN_URLS")
TURN_SECRET = env_str("TURN_SECRET")
TURN_TTL = env_int("TURN_TTL", 12 * 3600)
if TURN_URLS and not TURN_SECRET:
    raise ImproperlyConfigured("TURN_URLS needs TURN_SECRET (coturn's static-auth-secret)")
# SIP over TLS (tenant transport "tls"): the PBX certificate is checked against this CA file
# (PEM) instead of the system store, and always for the PBX domain.
SIP_TLS_CA_FILE = env_str("SIP_TLS_CA_FILE")

# Health and metrics (portal.health, portal.metrics). A sipworker counts as alive for /healthz
# this long after its last heartbeat (it beats every second). /metrics answers requests from
# METRICS_ALLOWED_NETWORKS (CIDRs) or bearing "Authorization: Bearer METRICS_TOKEN". With
# several processes (sipworkers, celery) set PROMETHEUS_MULTIPROC_DIR in all of them to one
# shared directory: prometheus_client's multiprocess mode, which /metrics reads.
SIPWORKER_ALIVE_SECONDS = env_int("SIPWORKER_ALIVE_SECONDS", 5)
# A file the sipworker touches on every heartbeat (its container's healthcheck reads the age).
SIPWORKER_HEARTBEAT_FILE = env_str("SIPWORKER_HEARTBEAT_FILE")
# The event loop of `manage.py sipworker` (phone.worker.loop): "uvloop" (libuv, the loop's own
# work per packet in C) or "asyncio" (the standard library's).
SIPWORKER_EVENT_LOOP = env_str("SIPWORKER_EVENT_LOOP", "uvloop")
if SIPWORKER_EVENT_LOOP not in SIPWORKER_LOOPS:
    raise ImproperlyConfigured(f"SIPWORKER_EVENT_LOOP must be one of {', '.join(SIPWORKER_LOOPS)}")
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS", ["127.0.0.1/32", "::1/128"])
METRICS_TOKEN = env_str("METRICS_TOKEN")

# Production hardening: applied whenever DEBUG is off, so `check --deploy` has nothing to fix.
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=True)
    # Probes and scrapers speak plain HTTP to the container itself.
    SECURE_REDIRECT_EXEMPT = [r"^healthz", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=True)
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SECURE_REFERRER_POLICY = "same-origin"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
