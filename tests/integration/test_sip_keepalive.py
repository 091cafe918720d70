"""Registration liveness against a real Kamailio that dies and comes back on the same port.

Our UserAgent probes the PBX with OPTIONS every 2 s (phone/sip/useragent.py, keepalive); when
Kamailio is stopped it must report FAILED within seconds, not after a REGISTER refresh or
Timer F, and once Kamailio runs again (fresh, with an empty location table) it must register
again on its own. The measured times are printed (pytest -s); the bounds are generous because
timed assertions do not belong in tests (design.md §6): they only catch "never".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from phone.sip.registration import RegistrationState, RegistrationStateChanged
from phone.sip.useragent import UserAgent, UserAgentConfig
from tests.support.pbx import Kamailio
from tests.support.ports import free_port, release_ports
from tests.support.ua import Phone

pytestmark = pytest.mark.integration


class KeepalivePhone(Phone):
    """A :class:`Phone` whose UserAgent probes the PBX and re-registers quickly."""

    def _make_core(self, addr: tuple[str, int]) -> UserAgent:
        return UserAgent(
            UserAgentConfig(
                username=self.ext,
                domain=self.domain,
                local_addr=addr,
                password=self.password,
                transport=self.transport_name,
                proxy_addr=self.proxy_addr,
                expires=self.expires,
                keepalive_interval=2.0,
                keepalive_timeout=4.0,
                reregister_base=1.0,
                reregister_max=8.0,
                register_retry_base=2.0,
                register_retry_max=8.0,
            )
        )


async def test_it_reports_a_dead_pbx_and_registers_again_when_it_is_back(
    make_kamailio: Callable[..., Kamailio],
) -> None:
    # Held by this test from start to end, so the restarted Kamailio gets the very same port
    # (the helper reserves a port only when it picks one itself).
    port = free_port()
    loop = asyncio.get_running_loop()
    phone: Phone | None = None
    try:
        # Starting and stopping Kamailio blocks; in a thread, the phone's timers keep running.
        pbx: Kamailio = await asyncio.to_thread(make_kamailio, port=port)
        phone = await KeepalivePhone.open(pbx, "1001")
        registered = await phone.register()
        assert registered.state is RegistrationState.REGISTERED
        assert pbx.registered("1001")
        await asyncio.sleep(3.0)  # a probe or two answered
        assert phone.seen(RegistrationStateChanged, state=RegistrationState.FAILED) == []

        await asyncio.to_thread(pbx.stop)
        stopped = loop.time()
        failed: Any = await phone.wait_for(
            RegistrationStateChanged, 10.0, state=RegistrationState.FAILED
        )
        failed_after = loop.time() - stopped
        print(f"\nPBX stopped -> FAILED ({failed.reason}) after {failed_after:.2f} s")
        assert failed.reason == "no response from the PBX"

        restarting = loop.time()
        again: Kamailio = await asyncio.to_thread(make_kamailio, port=port)
        assert again.port == pbx.port
        answering = loop.time()  # start() returns once Kamailio answers OPTIONS
        await phone.wait_for(RegistrationStateChanged, 10.0, state=RegistrationState.REGISTERED)
        registered_after = loop.time() - answering
        print(
            f"PBX answering again -> REGISTERED after {registered_after:.2f} s"
            f" ({loop.time() - restarting:.2f} s after the restart began)"
        )
        assert again.registered("1001")
        # One FAILED for the whole outage, however many probes and re-REGISTERs went unanswered.
        assert len(phone.seen(RegistrationStateChanged, state=RegistrationState.FAILED)) == 1
    finally:
        if phone is not None:
            await phone.close()
        release_ports(port)
