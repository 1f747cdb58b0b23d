"""driftmon's tests.  A package, so test modules import shared helpers as
``from tests.conftest import produce`` and may share basenames across subdirectories."""
