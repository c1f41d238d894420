"""Authorization of Latchkey's own API (and, later, tenant policy)."""
