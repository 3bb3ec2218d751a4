# The two commands of the quick start: `make demo` and `make test`.
PYTHON ?= python3
STAMP := .make/installed

.PHONY: setup demo test lint format bench clean

# Python packages (editable install with the dev extras) and Debian's influxd, once.
$(STAMP): pyproject.toml
	@command -v influxd >/dev/null 2>&1 || scripts/install-influxd.sh
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@mkdir -p .make && touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PYTHON) scripts/demo.py

test: $(STAMP)
	$(PYTHON) -m pytest

lint: $(STAMP)
	ruff check .
	ruff format --check .

format: $(STAMP)
	ruff check --fix .
	ruff format .

bench: $(STAMP)
	$(PYTHON) bench/run.py

clean:
	rm -rf .make .demo .pytest_cache .ruff_cache *.egg-info
