"""The long-running service, ``driftmon run``: the process (:mod:`.process`:
logging, signals, GC), the :class:`~driftmon.service.daemon.Daemon` that wires
source -> pipelines -> outputs (:mod:`.daemon`), its checkpoints
(:mod:`.checkpoint`), the status server (:mod:`.http`) and logging (:mod:`.logs`)."""
