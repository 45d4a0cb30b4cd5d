"""Mixture optimisers: pure, deterministic functions of their inputs (``ado``: online, from losses)."""
