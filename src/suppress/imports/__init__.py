"""Bulk imports and exports: upload, parse, apply in batches, report; stream exports."""
