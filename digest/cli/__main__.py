"""`python -m digest.cli`: the `digest` command without its console script.

Tests and benchmarks start it this way in a child process, with the interpreter they run on.
"""

from digest.cli import app

app()
