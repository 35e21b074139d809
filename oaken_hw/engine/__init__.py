"""The Oaken engine top: write path, read path, MMU, and its golden model (``docs/engine.md``)."""
