"""WebSocket routes.  The PhoneConsumer (/ws/phone/) arrives with the browser call path."""

websocket_urlpatterns: list = []
