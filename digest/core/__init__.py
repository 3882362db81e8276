"""The pure core: selection, cadence, rendering, checks, mails, URLs and text rules.

Data in, data out — no database, no network, no clock, no file writes (tests/test_layers.py)."""
