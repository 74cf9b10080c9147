# vipctl — see README.md. Every target installs what it needs on a fresh
# Debian 12 machine (as root); nothing has to be installed by hand.
SHELL := /bin/bash
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X github.com/vipctl/vipctl/internal/version.Version=$(VERSION) -X github.com/vipctl/vipctl/internal/version.Commit=$(COMMIT)
GOARCH  ?= amd64

.PHONY: all build test unit e2e chaos demo bench fleet cluster offline fmt vet lint fuzz clean

all: build

## build: static vipctl binary in bin/ (CGO_ENABLED=0)
build:
	CGO_ENABLED=0 GOOS=linux GOARCH=$(GOARCH) go build -trimpath -ldflags '$(LDFLAGS)' -o bin/vipctl ./cmd/vipctl

## test: every test — unit tests, the real kubeadm check, containerd import, the VM e2e on a real kernel,
##       and the real cluster's scenarios (those of make cluster, after the rest)
test:
	scripts/test.sh

## cluster: the real-cluster e2e (docs/lab.md): kind-style masters on this host, the VM joined as a
##          worker (faults, teardown, kube-proxy's ipvs mode), as the first master by vipctl init
##          and as a third master by vipctl join --control-plane; builds the node components and
##          etcd 3.6 first (as root; ~25-35 min warm on 2 cores; make test runs them too)
cluster:
	VIPCTL_CLUSTER=1 go test -count=1 -timeout 80m -v ./e2e/cluster

## unit: the tests that need no root, VM or built Kubernetes
unit:
	go test -short ./...

## e2e: only the VM end-to-end scenarios, fake and real apiservers (VIPCTL_E2E_RUN=Pattern narrows them)
e2e:
	go test -count=1 -timeout 40m -v -run 'TestVM|TestRealControlPlane' ./e2e/

## chaos: the real-apiserver chaos scenarios with 50 kill/restart cycles (docs/lab.md)
chaos:
	VIPCTL_REAL_CYCLES=50 go test -count=1 -timeout 40m -v -run TestRealControlPlane ./e2e/

## demo: boot the VM lab, run vipctl against three in-VM masters and show the IPVS table
demo:
	go run ./e2e/cmd/vmlab demo

## bench: micro-benchmarks and the VM failover benchmarks; rewrites docs/benchmarks.md (as root)
bench:
	go test -run '^$$' -bench . -benchmem ./... | tee bench.out
	go run ./e2e/cmd/vmlab gobench bench.out && rm -f bench.out
	go run ./e2e/cmd/vmlab bench $(or $(TRIALS),20)
	go run ./e2e/cmd/vmlab bench-real $(or $(TRIALS),20)
	go run ./e2e/cmd/vmlab bench-recovery $(or $(TRIALS),20)

## fleet: apiserver CPU, RSS and connections of N simulated nodes per load; rewrites docs/benchmarks.md's fleet section (as root)
##        FLEET_ARGS narrows it, e.g. FLEET_ARGS='-n 250,500 -window 20s -loads watchdog,kubelet'
fleet:
	go run ./e2e/cmd/vmlab fleet $(FLEET_ARGS)

## offline: air-gapped bundles in dist/ (see docs/offline.md)
offline:
	VERSION=$(VERSION) COMMIT=$(COMMIT) scripts/offline.sh

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	go vet ./...

fuzz:
	go test ./hosts -run '^$$' -fuzz FuzzEdit -fuzztime 1m

clean:
	rm -rf bin dist
