"""Secret keeping. For now only Latchkey's own key material (see ``master_key``)."""
