"""linelight agent: the runtime (journal, forwarder, scan loop, diagnostics, CLI)."""

__version__ = "0.1.0"
