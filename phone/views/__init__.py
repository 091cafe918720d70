"""The phone page and its htmx panels (design.md §7: function views, scoped lookups)."""
