"""The model: digest's nouns as plain data — weeks, terms, issues, snapshots, readers — with the
state machines they obey. Imports nothing of digest outside itself (docs/design.md)."""
