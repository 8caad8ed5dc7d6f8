# Postern — build, test and run both programs. See README.md.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/postern/postern/shared/version.Version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
PROGRAMS := postern-edge postern-central
CROSS := linux/amd64 linux/arm64 linux/arm

.PHONY: all build test test-short lint cross run bench bench-postfix clean firmware firmware-test packages packages-test deploy-test

all: build

build:
	@mkdir -p bin
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/postern-edge ./edge/cmd/postern-edge
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/postern-central ./central/cmd/postern-central
	$(GO) build -trimpath -o bin/postern-devlab ./deploy/dev/devlab

# The README test command. PostgreSQL and Mosquitto tests run when
# POSTERN_TEST_POSTGRES / POSTERN_TEST_MOSQUITTO are set (.ci/run sets them).
test:
	$(GO) test -race -timeout 20m ./...

test-short:
	$(GO) test -short ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy and commit"; exit 1; }

cross:
	@mkdir -p bin
	@for p in $(CROSS); do \
	  os=$${p%/*}; arch=$${p#*/}; suffix=$$os-$$arch; extra=""; \
	  if [ $$arch = arm ]; then extra="GOARM=7"; suffix=$$suffix-v7; fi; \
	  for prog in $(PROGRAMS); do \
	    dir=./edge/cmd/$$prog; [ $$prog = postern-central ] && dir=./central/cmd/$$prog; \
	    echo "build $$prog $$suffix"; \
	    env CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $$extra $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/$$prog-$$suffix $$dir || exit 1; \
	  done; \
	done

# Central and one edge on loopback with embedded defaults; Ctrl-C stops both.
run: build
	@deploy/dev/run.sh

# Benchmarks: spool group commit, snapshot and delta sizes, delivery
# throughput, edge memory with 10k/50k/100k allowlisted devices
# (BenchmarkAllowlistMemory); then a change enforced on 50 edge sync
# clients, and the fleet simulation: postern-central serve on PostgreSQL
# (POSTERN_TEST_POSTGRES), a private Mosquitto, 500 edge sync clients
# (shared/fleetsim, a few minutes).
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./...
	set -o pipefail; POSTERN_TEST_FLEET=50 $(GO) test -count=1 -v -run 'TestApproveSuspendAcrossFleet' ./shared/contract | grep -E 'enforced on|^(ok|FAIL|---)'
	set -o pipefail; POSTERN_FLEET_SIM=500 $(GO) test -count=1 -v -timeout 15m -run 'TestFleetSimulation' ./shared/fleetsim | grep -E 'fleetsim_test|^(ok|FAIL|---)'

# Side by side with Postfix 3.7, Exim 4 and OpenSMTPD (Debian packages; Exim
# and OpenSMTPD only unpacked, never installed as the system MTA) and the raw
# ceiling, each from a private config on loopback ports; a few minutes.
# See deploy/bench/README.md.
bench-postfix: build
	deploy/bench/compare.sh

firmware:
	firmware/build.sh

firmware-test:
	firmware/test.sh

packages: cross
	deploy/packages.sh

packages-test: packages
	deploy/test/packages-test.sh

clean:
	rm -rf bin dist firmware/out
