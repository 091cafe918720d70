"""Integration tests run real programs (Kamailio, baresip, SIPp) on 127.0.0.1.

Their fixtures come from tests.support.fixtures (loaded by tests/conftest.py)."""
