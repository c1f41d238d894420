"""The `latchkey` command: a front door like the HTTP ones, over the same services."""
