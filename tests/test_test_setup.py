"""The test suite's own setup: which PostgreSQL and browser it finds, what it says it covered,
and that its SendGrid stand-in stops at once (the suite starts and stops hundreds of them).
"""

from __future__ import annotations

import time

from tests.sendgrid_server import SendGridTestServer

# --------------------------------------------------------------------------- the fake SendGrid


def test_the_test_sendgrid_server_stops_at_once():
    # serve_forever() notices shutdown() only between polls; at the default 0.5 s poll every
    # stop cost up to half a second. The fastest of three stops shows the poll, not the load.
    stops = []
    for _ in range(3):
        server = SendGridTestServer().start()
        started = time.monotonic()
        server.stop()
        stops.append(time.monotonic() - started)
    assert min(stops) < 0.1, stops
