"""Two calls' legs joined in the worker (phone.media.join): each far end hears the other, across
μ-law and A-law, with real sockets and the shared 20 ms ticker."""

import asyncio

import numpy as np
import pytest

from phone.media import g711
from phone.media.join import LegJoin
from phone.media.leg import PortRange, RtpLeg
from phone.media.tones import MusicOnHold, SineTone
from tests.support import analysis

HOST = "127.0.0.1"


@pytest.fixture
def ports():
    return PortRange(47000, 47999)


async def pair(ports, payload_type):
    """(our leg of a call, the far end's leg) wired to each other."""
    ours = await RtpLeg.open(HOST, ports, payload_type=payload_type)
    far = await RtpLeg.open(HOST, ports, payload_type=payload_type)
    ours.set_remote(HOST, far.local_port)
    far.set_remote(HOST, ours.local_port)
    return ours, far


async def heard(leg: RtpLeg, seconds: float):
    frames = []
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        pcm = leg.pull_pcm()
        if pcm is None:
            await asyncio.sleep(0.01)
        else:
            frames.append(pcm)
    return analysis.non_silent(np.concatenate(frames)) if frames else np.zeros(0)


async def test_each_far_end_hears_the_other_across_laws(ports):
    a, far_a = await pair(ports, g711.PAYLOAD_TYPE_PCMU)
    b, far_b = await pair(ports, g711.PAYLOAD_TYPE_PCMA)
    a.source = MusicOnHold()  # the held party had music: the join replaces it with the other
    far_a.source, far_b.source = SineTone(700), SineTone(1000)
    join = LegJoin(a, b)
    try:
        await asyncio.sleep(0.3)
        at_b, at_a = await asyncio.gather(heard(far_b, 1.0), heard(far_a, 1.0))
        assert analysis.dominant_frequency(at_b) == pytest.approx(700, abs=10)
        assert analysis.dominant_frequency(at_a) == pytest.approx(1000, abs=10)
        assert join.relayed > 50 and a.source is None
    finally:
        join.close()
        for leg in (a, b, far_a, far_b):
            await leg.aclose()


async def test_it_stops_relaying_when_closed(ports):
    a, far_a = await pair(ports, g711.PAYLOAD_TYPE_PCMU)
    b, far_b = await pair(ports, g711.PAYLOAD_TYPE_PCMU)
    far_a.source = SineTone(700)
    join = LegJoin(a, b)
    try:
        await asyncio.sleep(0.3)
        join.close()
        await asyncio.sleep(0.1)
        count = join.relayed
        await asyncio.sleep(0.3)
        assert join.relayed == count
    finally:
        for leg in (a, b, far_a, far_b):
            await leg.aclose()
