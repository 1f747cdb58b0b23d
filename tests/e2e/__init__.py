"""End-to-end tests: the driftmon command (replay, run, demo), crashes and outages, security, fuzzing and the deploy/ artefacts against real brokers, receivers and Prometheus."""
