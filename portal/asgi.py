"""ASGI entry point: HTTP through Django, WebSockets through Channels (design.md §2)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

from django.core.asgi import get_asgi_application

# Django must be set up before anything imports models (consumers do).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from phone.signalling.routing import websocket_urlpatterns  # noqa: E402
from phone.worker.embedded import StartsEmbeddedWorker  # noqa: E402
from portal.http_limits import answer_overlong_request_lines  # noqa: E402

answer_overlong_request_lines()

application = StartsEmbeddedWorker(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": AllowedHostsOriginValidator(
                AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
            ),
        }
    )
)
