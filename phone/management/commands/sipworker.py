"""`manage.py sipworker`: host SIP lines and calls for the users connected to the web processes.

Needs a shared channel layer (REDIS_URL); run one per core. Stops cleanly on SIGTERM/SIGINT,
unregistering its lines.
"""

import asyncio
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from phone.worker import loop as worker_loop
from phone.worker.host import SipWorkerHost


class Command(BaseCommand):
    help = "Run a sipworker: SIP user agents, calls and media for connected phone pages."

    def add_arguments(self, parser):
        # By default each sipworker reads its own channel and owns lines through Redis leases
        # (phone.signalling.owners), so several run side by side.
        parser.add_argument("--channel", default=None)

    def handle(self, *args, **options):
        if not settings.REDIS_URL:
            raise CommandError(
                "sipworker needs REDIS_URL: without it the host runs inside the web process"
            )
        kind = settings.SIPWORKER_EVENT_LOOP
        # asyncio.run, on the loop chosen (phone.worker.loop: uvloop unless told otherwise).
        with asyncio.Runner(loop_factory=lambda: worker_loop.new_event_loop(kind)) as runner:
            runner.run(self._run(options["channel"]))

    async def _run(self, channel):
        host = SipWorkerHost(channel)
        runner = asyncio.create_task(host.run())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self.stdout.write(f"sipworker {host.worker_id} on channel {host.channel}")
        await stop.wait()
        runner.cancel()
        await host.shutdown()
