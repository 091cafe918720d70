"""Browser-facing signalling: the WebSocket consumer and its routing, the message schema, the
events between web processes, and the protocol spoken with the sipworker (design.md §3)."""
