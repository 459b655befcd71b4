"""Operations: what a job's life looks like from outside (logs, metrics) and probes.

* :mod:`bot.observability.telemetry` - the core's one observer of job lifecycle steps: an
  INFO line per step (``event`` ``job.accepted``, ``job.started``, ...) and, when metrics
  are on, the counters and histograms. No Prometheus import: the core uses it either way.
* :mod:`bot.observability.metrics` - the Prometheus registry and instruments
  (``prometheus-client``), and the gauges read when scraped.
* :mod:`bot.observability.health` - readiness checks that know nothing of Discord.
* :mod:`bot.observability.server` - the HTTP server: ``/metrics``, ``/healthz``, ``/readyz``.
"""
