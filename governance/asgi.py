import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governance.settings")

django_application = get_asgi_application()

from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from entitlements.fastroute import CONSUME  # noqa: E402
from envelopes.evaluation.fastroute import EVALUATE  # noqa: E402
from envelopes.gate.api.execute import EXECUTE  # noqa: E402
from envelopes.inbox.stream_route import InboxStreamRouter  # noqa: E402
from envelopes.requests import bus  # noqa: E402
from envelopes.requests.longpoll_route import LongPollRouter  # noqa: E402
from governance.api.device_leases import HEARTBEAT  # noqa: E402
from governance.hotpath import HotPath  # noqa: E402

# Mandate serves its own static assets (admin, Swagger UI) so one process is a whole
# deployment; set SERVE_STATIC=false when a front proxy serves STATIC_ROOT instead.
http_application = ASGIStaticFilesHandler(django_application) if settings.SERVE_STATIC else django_application

# Long-poll waiters (GET /api/requests/{id}/wait) are answered before Django: a Django async
# view would pin one thread per waiter (see envelopes/requests/longpoll.py). So are the inbox's
# live streams (envelopes/inbox/stream_route.py), on the same notification bus. The hot
# endpoints' plain requests are too (governance/hotpath.py): POST /v1/evaluate
# (envelopes/evaluation/fastroute.py), POST /api/entitlement/consume (entitlements/fastroute.py),
# POST /v1/actions/{id}/execute (envelopes/gate/api/execute.py) and POST /governance/lease/heartbeat
# (governance/api/device_leases.py).
# Everything else is Django.
hot_path = HotPath(http_application, [EVALUATE, EXECUTE, CONSUME, HEARTBEAT], threads=settings.MANDATE_EVALUATE_THREADS)
application = InboxStreamRouter(LongPollRouter(hot_path), bus)

# A server process holds many long-lived objects (10,000 parked long-poll waiters are a few
# hundred thousand): the default thresholds (700, 10, 10) rescan them all several times a
# second under load, and a full collection then pauses the process for 100-300 ms. Startup
# objects are frozen out of collection; young collections run every 50,000 allocations.
gc.freeze()
gc.set_threshold(50_000, 20, 20)
