"""Everything that speaks a protocol to the outside, over the same services."""
