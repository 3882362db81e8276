"""The reader's flows that write to them: double opt-in signup, confirm, unsubscribe, and the
preference centre (pause, time zone, download or erase my data)."""
