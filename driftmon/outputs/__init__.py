"""Where results go: Prometheus metrics (:mod:`.metrics`), results sinks
(:mod:`.sinks`), alert webhooks (:mod:`.alerts`), and the dead-letter topic for
rejected and late records (:mod:`.deadletter`)."""
