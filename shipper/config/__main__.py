"""`python -m shipper.config` prints config.example.yaml."""

from shipper.config.example import render_example

print(render_example(), end="")
