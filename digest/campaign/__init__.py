"""The campaign: the workflows that move an issue — build, check, send, resume, report.

`digest.campaign.lifecycle` is the only code that drives an issue through its states."""
