# asyncinfer — the two commands: `make run` (the demo) and `make test`.
GO      ?= go
BIN     := bin/asyncinfer
PKGS    := ./...
# The demo make run shows: a little of every kind of trouble, all answered.
DEMO_FLAGS ?= --duplicates 0.05 --malformed 0.005 --poison-items 0.001 --model-error-rate 0.01

.PHONY: all run test build lint deps clean bench-quick

include deploy/kafka.mk
include deploy/mlserver.mk

all: build

deps:
	@command -v $(GO) >/dev/null || { echo "Go 1.26 is required: https://go.dev/dl/" >&2; exit 1; }
	$(GO) mod download

build: deps
	$(GO) build -o $(BIN) ./cmd/asyncinfer

## run: the demo on the embedded broker (kfake + srfake in process)
run: build
	./$(BIN) demo $(DEMO_FLAGS)

## test: every test, with the race detector, the real-Kafka suite included
## (integration/: it sets up podman and a locally built Apache Kafka image
## where no Docker engine exists); artifacts (the status page's screenshot)
## land in test-output/, the suite's report in integration-report.json
test: deps lint bench-quick
	@deploy/test-deps.sh
	@mkdir -p test-output
	@env_lines="$$(deploy/integration-env.sh)" && eval "$$env_lines" && \
	  echo "$(GO) test -race -count=1 -timeout 25m -artifacts -outputdir $(CURDIR)/test-output $(PKGS)" && \
	  $(GO) test -race -count=1 -timeout 25m -artifacts -outputdir $(CURDIR)/test-output $(PKGS)
	@echo "--- integration-report.json (the real-Kafka suite)"; cat integration-report.json

## bench-quick: asyncinfer bench --quick, every scenario small beside its
## baselines (stages, raw hops and the embedded broker in processes of
## their own): fails when the harness breaks (a scenario or baseline
## missing, a request unanswered, counts that disagree), never on
## performance; the report lands in test-output/bench-quick/. The binary
## also runs as its own "before" (--before), so that path is checked too
bench-quick: build
	@mkdir -p test-output/bench-quick
	@echo "./$(BIN) bench --quick --before ./$(BIN) --out test-output/bench-quick (progress in test-output/bench-quick/progress.log)"
	@./$(BIN) bench --quick --before ./$(BIN) --before-commit "this binary, as its own before" --out test-output/bench-quick 2>test-output/bench-quick/progress.log || \
	  { tail -n 30 test-output/bench-quick/progress.log; exit 1; }

## lint: gofmt, go vet, golangci-lint (.golangci.yml: the package layering
## as depguard rules, errorlint, staticcheck, nolintlint)
lint: deps
	@deploy/lint.sh

clean:
	rm -rf bin test-output
