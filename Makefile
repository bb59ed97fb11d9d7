# Set-up is implicit: every target that runs code first makes .venv from the lock file.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYNTH ?= data/synthetic-demo

.PHONY: demo baselines test lint bench lock docs

$(STAMP): pyproject.toml requirements/constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) search.py

baselines: $(STAMP)
	$(VENV)/bin/wsol data synth --out $(SYNTH) --preset demo
	$(VENV)/bin/wsol data check --metadata-root $(SYNTH)/metadata --data-root $(SYNTH)
	$(PY) benchmarks/synthetic_baselines.py --data-root $(SYNTH) --json benchmarks/results/synthetic_baselines.json

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	tests/loopback_only.sh $(PY) -m pytest

docs: $(STAMP)
	$(VENV)/bin/mkdocs serve

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | sed -e "1i # Exact versions of everything 'pip install -e .[dev]' resolves (Python 3.11, Linux x86_64)." -e '1i # Regenerate with: make lock' > requirements/constraints.txt
