"""Compatibility layers that speak other identity services' wire protocols."""
