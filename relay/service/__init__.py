"""What the HTTP API (``relay.http``) and the web console (``relay.console``) both stand on.

Neither front end imports the other: both call these modules with an aiohttp request that carries
the authenticated :class:`~relay.service.access.Principal` and the services of
:class:`~relay.service.wiring.HttpServices`. Here live the tenant rules (whose data a principal
may touch), parameter validation, the status-search filter and cursor, the export, queue and
suppression-list operations, and the JSON shaping of their answers. The front ends only add their
own edge: JSON envelopes and routes (``relay.http``), HTML pages and sessions (``relay.console``).
"""
