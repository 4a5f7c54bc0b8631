# The two commands of the README; both do all set-up first.
.PHONY: demo test bench chaos config-example

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

bench:
	bash scripts/setup.sh && .venv/bin/python -m bench

config-example:
	.venv/bin/python -m shipper.config > config.example.yaml

chaos:
	bash scripts/setup.sh && SHIPPER_CHAOS=full .venv/bin/pytest -m chaos -s
