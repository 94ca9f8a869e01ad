# The commands a person types. Each one first brings the machine to ready
# (scripts/bootstrap.sh): OS packages, .venv, Postgres and Redis, migrations.
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: bootstrap test demo lint bench clean

bootstrap:
	@bash scripts/bootstrap.sh

test: bootstrap
	@PYTEST_ARGS="$(PYTEST_ARGS)" bash scripts/test.sh

lint: bootstrap
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	$(PY) manage.py makemigrations --check --dry-run
	.venv/bin/lint-imports
	.venv/bin/mypy .

demo: bootstrap
	@bash scripts/demo.sh

bench: bootstrap
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf var .pytest_cache
