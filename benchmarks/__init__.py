"""digest benchmarks: `python -m benchmarks` measures send, build and web against the goals.

See benchmarks/README.md for what each one does and the numbers measured on this machine.
"""
