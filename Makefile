# localguard: the two commands that work on a fresh machine are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
export CONTAINERS_CONF := $(CURDIR)/lab/containers.conf
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(BIN):$(PATH)
SCENARIOS := $(notdir $(wildcard molecule/*))
# Every pytest run of `make test` reports here; scripts/test-summary.py reads them at the end.
JUNIT := $(CURDIR)/.cache/junit
# MITOGEN=1 runs the lab's harden.yml and lab tests with the Mitogen strategy (README, Speed); the
# fresh-lab walk and Molecule always run on Ansible's own.
MITOGEN ?= 0
WITH_MITOGEN = $(if $(filter 1,$(MITOGEN)),ANSIBLE_STRATEGY_PLUGINS=$$($(BIN)/python -c \
  'import ansible_mitogen, os; print(os.path.dirname(ansible_mitogen.__file__))')/plugins/strategy \
  ANSIBLE_STRATEGY=mitogen_linear)

.PHONY: bootstrap image lab lab-down demo harden test clean-reports lint docs unit sanity molecule lab-test mutate bench clean

bootstrap:  ## apt packages, machine settings, pinned venv
	bash scripts/bootstrap.sh

image: bootstrap  ## lab host image (cached by a hash of its inputs)
	scripts/lab-image.sh

lab: image  ## (re)create the 5-host lab fleet and its inventory
	$(BIN)/python scripts/lab.py up

lab-down:
	$(BIN)/python scripts/lab.py down

harden:  ## run harden.yml against the running lab
	$(WITH_MITOGEN) $(BIN)/ansible-playbook harden.yml

# harden is run after lab, never beside it: under `make -j` two prerequisites would run at once.
demo: lab  ## build the lab and harden it: the main job on the default config
	$(MAKE) harden

lint: bootstrap
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint --profile production
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/control-coverage.py
	$(BIN)/python scripts/role-docs.py --check

# Role READMEs from meta/argument_specs.yml (aar-doc); `make lint` fails when one is stale.
docs: bootstrap
	$(BIN)/python scripts/role-docs.py

unit: bootstrap
	$(BIN)/pytest tests/unit --junitxml=$(JUNIT)/unit.xml

# ansible-test sanity on the collection as `ansible-galaxy collection build` ships it (module docs
# vs argument specs, imports, licences, pylint, ...): about 45 s; 2.5 min the first time, while
# ansible-test makes its venvs from PyPI (kept in ~/.ansible/test).
sanity: bootstrap
	scripts/collection-sanity.sh --junit-file $(JUNIT)/sanity.xml

# Each scenario keeps its state under .cache (not `molecule reset`, which removes every Molecule
# container on the machine, other projects' included). A failed scenario does not stop the next
# ones: CI reports every scenario's result in one run.
molecule: image
	failed=""; for s in $(SCENARIOS); do \
	  scripts/molecule-fresh.sh $$s && \
	  PYTEST_ADDOPTS=--junitxml=$(JUNIT)/molecule-$$s.xml \
	    MOLECULE_EPHEMERAL_DIRECTORY=$(CURDIR)/.cache/molecule/$$s $(BIN)/molecule test -s $$s \
	  || failed="$$failed $$s"; \
	done; \
	if [ -n "$$failed" ]; then echo "molecule: failed scenarios:$$failed"; exit 1; fi

# The lab fleet over real SSH: build it and walk a new operator's first day on the fresh hosts
# (a copy of inventories/example), then `make demo` rebuilds it over the running one (what a
# second `make demo` does) and hardens it; then check it from this machine. Tests marked
# molecule_only (they reconfigure a host, or time a behaviour every host has alike) run in their
# role's Molecule scenario instead (tests/unit/test_test_layout.py holds each to one).
lab-test: lab
	$(BIN)/pytest -p no:cacheprovider tests/lab -m fresh_lab --junitxml=$(JUNIT)/lab-fresh.xml
	$(MAKE) demo
	$(WITH_MITOGEN) $(BIN)/pytest -p no:cacheprovider tests/infra tests/lab -m 'not fresh_lab and not molecule_only' \
	  --junitxml=$(JUNIT)/lab.xml \
	  --ansible-inventory=inventories/lab/hosts.yml --connection=ansible \
	  --hosts='gpu_hosts,log_collectors,ca'

# Molecule's scenarios and the lab fleet use containers and networks of their own, so they run
# side by side, each in its own make (the image is built before, once). Each stage's log is printed
# whole when both end, a failed one's tail again last, then the summary: it fails the run when a
# stage's runner found no test (Molecule's verifier only warns) and names the failed tests.
test: clean-reports lint unit sanity image  ## everything CI runs
	status=0; scripts/run-stages.sh $(CURDIR)/.cache/stage-logs molecule lab-test || status=$$?; \
	  $(BIN)/python scripts/test-summary.py $(JUNIT) unit sanity $(addprefix molecule-,$(SCENARIOS)) lab-fresh lab \
	  && exit $$status

clean-reports:
	rm -rf $(JUNIT)

# Removes each listed control from a copy of the project and shows its test fail (scripts/mutate.py);
# about half an hour against the running, hardened lab, so not part of `make test`.
mutate: bootstrap
	$(BIN)/python scripts/mutate.py

# The benchmarks reuse the lab tests' helpers and the collection's module_utils.
bench: export PYTHONPATH := $(CURDIR)/collections:$(CURDIR)/tests/lab:$(CURDIR)/tests:$(CURDIR)/bench
bench: demo  ## benchmarks: they print ratios measured in one run, they assert nothing
	$(BIN)/python bench/firewall_sets.py
	$(BIN)/python bench/gateway_vs_direct.py
	$(BIN)/python bench/gateway_keys.py
	$(BIN)/python bench/key_revocation.py
	$(BIN)/python bench/log_shipping.py
	$(BIN)/python bench/harden_walltime.py --mitogen

clean: lab-down
	rm -rf .cache
