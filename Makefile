# The kit's entry points. Every target creates .venv on first use (a bare machine needs only
# python3 with venv; torch==2.13.0 resolves to the CPU build this machine ships).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   ?= 2
LAB_ARGS ?=
HUB_ARGS ?=
BENCH_ARGS ?=
CAPSTONE_ARGS ?=
GPU_CHECK_ARGS ?=

.PHONY: help venv demo test test-fast lab hub book notebooks release bench capstone gpu-check clean

help:
	@echo "make demo      release the assignments, autograde the sample submissions, write build/demo/"
	@echo "make test      run every test (library, notebooks, release sync, autograder end to end)"
	@echo "make lab       open JupyterLab on the repository (students start here)"
	@echo "make hub       JupyterHub on 127.0.0.1:8000 with the nbgrader exchange, in build/hub/ (docs/hub.md)"
	@echo "make book      execute the course notebooks and render them to build/book/*.html"
	@echo "make notebooks rebuild course/*.ipynb and assignments/ from their py:percent sources"
	@echo "make bench     time every attention variant against dense attention, write build/bench/"
	@echo "make capstone  train every variant on the long-range tasks, write build/capstone/ (~30 min;"
	@echo "               CAPSTONE_ARGS=--quick: ~3 min)"
	@echo "make gpu-check on a GPU machine: CUDA tests, GPU benchmark, grading --gpu; build/gpu-check/"

# Debian packages the autograder uses: bubblewrap (the grading sandbox), PostgreSQL (the
# gradebook on a server; its tests start one on loopback) and Chromium (the browser tests drive
# it with Playwright; Playwright's own browser download is not used). Installed with apt-get when
# missing and we are root; otherwise say what to install (grading then refuses without --unsafe,
# and the PostgreSQL and browser tests are skipped).
SYSDEPS := bwrap:bubblewrap pg_ctlcluster:postgresql chromium:chromium
SYSSTAMP := $(VENV)/.sysdeps

$(SYSSTAMP): Makefile  # checked again when SYSDEPS changes (installs only what is missing)
	@missing=""; for dep in $(SYSDEPS); do cmd=$${dep%%:*}; pkg=$${dep#*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian packages:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "warning: could not install$$missing"; \
	  else echo "warning: please install the Debian packages$$missing (sudo apt-get install$$missing)"; fi; \
	fi
	@mkdir -p $(VENV) && touch $@

$(STAMP): pyproject.toml | $(SYSSTAMP)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (attnkit)" >/dev/null
	touch $(STAMP)

# JupyterHub's proxy (make hub, tests/test_hub.py) is a Node program: one on PATH is used as it is;
# else npm installs it into $(VENV)/node (autograder/hub.py looks there first); without npm, as
# root, Debian's node-configurable-http-proxy; otherwise a warning (the hub test is then skipped)
# and another try next time.
CHP_STAMP := $(VENV)/.proxy

$(CHP_STAMP): | $(STAMP)
	@if command -v configurable-http-proxy >/dev/null 2>&1; then :; \
	elif command -v npm >/dev/null 2>&1; then \
	  echo "installing configurable-http-proxy into $(VENV)/node"; \
	  npm install --prefix $(VENV)/node --no-audit --no-fund --loglevel=error configurable-http-proxy@4 >/dev/null \
	    || echo "warning: npm could not install configurable-http-proxy"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's node-configurable-http-proxy"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq node-configurable-http-proxy >/dev/null) \
	    || echo "warning: could not install node-configurable-http-proxy"; \
	else echo "warning: configurable-http-proxy missing (npm install -g configurable-http-proxy, or" \
	  "sudo apt-get install node-configurable-http-proxy): make hub and its test cannot run"; fi
	@if command -v configurable-http-proxy >/dev/null 2>&1 || [ -x $(VENV)/node/node_modules/.bin/configurable-http-proxy ]; \
	then touch $@; fi

venv: $(STAMP) $(CHP_STAMP)

demo: $(STAMP)
	$(BIN)/attnkit demo --out build/demo

test: $(STAMP) $(CHP_STAMP)
	$(BIN)/python -m pytest -n $(JOBS) --dist loadgroup --durations=30 tests

test-fast: $(STAMP) $(CHP_STAMP)
	$(BIN)/python -m pytest -n $(JOBS) -m "not slow" tests

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=. $(if $(filter 0,$(shell id -u)),--allow-root,) $(LAB_ARGS)

hub: $(STAMP) $(CHP_STAMP)
	$(BIN)/attnkit hub start --dir build/hub $(HUB_ARGS)

book: $(STAMP)
	$(BIN)/attnkit book --out build/book

bench: $(STAMP)
	$(BIN)/attnkit bench --out build/bench $(BENCH_ARGS)

capstone: $(STAMP)
	$(BIN)/attnkit capstone --out build/capstone $(CAPSTONE_ARGS)

# On a GPU machine (docs/benchmarks.md, "GPU check"): the machine's own $(PYTHON), which must hold
# torch, runs the kit from the repository (PYTHONPATH). No .venv and no pip install of the kit: its
# torch pin would pull a second PyTorch. Exit 3 (make reports "Error 3"): no CUDA GPU.
gpu-check:
	@$(PYTHON) -c "import torch" 2>/dev/null || { echo "gpu-check: $(PYTHON) has no torch: nothing to check" \
	  "(make gpu-check PYTHON=/path/to/python3-with-torch)"; exit 3; }
	PYTHONPATH=$(CURDIR)/lib:$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(PYTHON) -m autograder.cli gpu-check \
	  --out build/gpu-check $(GPU_CHECK_ARGS)

notebooks release: $(STAMP)
	$(BIN)/attnkit build
	$(BIN)/attnkit release

clean:
	rm -rf build .pytest_cache
