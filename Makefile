# orderd developer tasks. Every variable below may be overridden on the command line or
# in the environment, e.g.  make run HTTP_ADDR=127.0.0.1:9090   or   make test PKGS=./domain/...
#
#   make run       local services + build + migrate + serve (foreground)
#   make test      local services + go test (what .ci/run runs)
#   make down      stop the services started by scripts/services.sh
#
# Local services (MariaDB, goaws for SQS, Mailpit for SMTP, and local-aws-sqs, a second SQS
# implementation some tests also run on) are managed by scripts/services.sh; see
# docker-compose.yml for the same setup with Docker.

SHELL := bash
.DEFAULT_GOAL := build

GO      ?= go
BIN     ?= bin/orderd
PKGS    ?= ./...
# Extra flags for go test, e.g. TESTFLAGS='-race -run TestPipeline -v'
TESTFLAGS ?=
TEST_TIMEOUT ?= 20m
# Arguments for cmd/loadgen (make bench ARGS='-orders 1000')
ARGS    ?=

# Ports of the local services; exported so scripts/services.sh uses the same ones.
SQS_PORT          ?= 4100
SQS2_PORT         ?= 4101
SMTP_PORT         ?= 1025
MAILPIT_HTTP_PORT ?= 8025
export SQS_PORT SQS2_PORT SMTP_PORT MAILPIT_HTTP_PORT

# orderd configuration for `make run` / `make bench` (see .env.example for every key).
MYSQL_DSN    ?= root@tcp(127.0.0.1:3306)/orderd
SQS_ENDPOINT ?= http://127.0.0.1:$(SQS_PORT)
# The emulator at SQS_ENDPOINT whose departures from SQS orderd works around (queues.Emulator):
# goaws by default, none with SQS_ENDPOINT empty (real AWS). Set SQS_EMULATOR=none when
# SQS_ENDPOINT is an implementation that follows SQS, e.g. SQS_ENDPOINT=$(SQS2_ENDPOINT).
SQS_EMULATOR ?= $(if $(SQS_ENDPOINT),goaws,none)
AWS_REGION   ?= us-east-1
SMTP_ADDR    ?= 127.0.0.1:$(SMTP_PORT)
HTTP_ADDR    ?= 127.0.0.1:8080
API_URL      ?= http://$(HTTP_ADDR)
MAILPIT_URL  ?= http://127.0.0.1:$(MAILPIT_HTTP_PORT)
# Tests create and drop their own databases on this server (note the empty database name).
TEST_MYSQL_DSN ?= root@tcp(127.0.0.1:3306)/
# The second SQS implementation (local-aws-sqs) the pipeline and duplicate-delivery tests also run on.
SQS2_ENDPOINT  ?= http://127.0.0.1:$(SQS2_PORT)

# goaws accepts any credentials, but the SDK wants some. Only set when talking to an
# emulator: with SQS_ENDPOINT empty (real AWS) the default credential chain must win.
AWS_DUMMY_CREDS = $(if $(SQS_ENDPOINT),AWS_ACCESS_KEY_ID=dummy AWS_SECRET_ACCESS_KEY=dummy)

# Environment for orderd itself. Values are single-quoted: the DSN contains parentheses.
ORDERD_ENV = MYSQL_DSN='$(MYSQL_DSN)' SQS_ENDPOINT='$(SQS_ENDPOINT)' SQS_EMULATOR='$(SQS_EMULATOR)' AWS_REGION='$(AWS_REGION)' \
	SMTP_ADDR='$(SMTP_ADDR)' HTTP_ADDR='$(HTTP_ADDR)' $(AWS_DUMMY_CREDS)

# Environment for the tests.
TEST_ENV = TEST_MYSQL_DSN='$(TEST_MYSQL_DSN)' SQS_ENDPOINT='$(SQS_ENDPOINT)' SQS_EMULATOR='$(SQS_EMULATOR)' SQS2_ENDPOINT='$(SQS2_ENDPOINT)' AWS_REGION='$(AWS_REGION)' \
	SMTP_ADDR='$(SMTP_ADDR)' MAILPIT_URL='$(MAILPIT_URL)' $(AWS_DUMMY_CREDS)

.PHONY: build services status down run test bench fmt vet clean

build:
	$(GO) build -o $(BIN) ./cmd/orderd

services:
	@scripts/services.sh up

status:
	@scripts/services.sh status

down:
	@scripts/services.sh down

# `services` and `build` are listed in order; with `make -j` they may run in parallel, which is fine.
run: services build
	env $(ORDERD_ENV) $(BIN) migrate
	@echo
	@echo "orderd API:  $(API_URL)"
	@echo "Dashboard:   $(API_URL)/  (user operator, password OPERATOR_PASSWORD; unset, orderd prints one it made)"
	@echo "Mailpit UI:  $(MAILPIT_URL)"
	@echo
	@echo "Try:"
	@echo "  curl -s -XPOST $(API_URL)/orders -H 'content-type: application/json' -d '{\"customerName\":\"Ada\",\"customerEmail\":\"ada@example.com\",\"items\":[{\"sku\":\"SKU-BOOK\",\"quantity\":1}]}'"
	@echo "  curl -s '$(API_URL)/orders/<id>?access=<token>'   (the link in the answer: Location, links.self)"
	@echo
	@echo "Ctrl-C stops orderd; 'make down' stops goaws, local-aws-sqs and mailpit."
	@echo
	exec env $(ORDERD_ENV) $(BIN) serve

# Fuzzing budget per target in `make test` (the request decoder and the kept headers), as a
# count of inputs: with a duration, Go 1.26's fuzz coordinator can report "context deadline
# exceeded" at the deadline on a loaded machine although no input failed (go.dev/issue/75804,
# fixed in Go 1.27). FUZZTIME=0 skips it; FUZZTIME=30s fuzzes for a while.
FUZZTIME ?= 5000x

test: services
	env $(TEST_ENV) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(TESTFLAGS) $(PKGS)
	@if [ "$(FUZZTIME)" != "0" ]; then \
		for f in FuzzPostOrders FuzzPlacement FuzzHeaders; do \
			echo "fuzzing $$f for $(FUZZTIME)"; \
			env $(TEST_ENV) $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) ./handlers/ || exit 1; \
		done; \
	fi

# Load generator against a running `make run` (cmd/loadgen).
bench:
	env $(ORDERD_ENV) API_URL='$(API_URL)' MAILPIT_URL='$(MAILPIT_URL)' $(GO) run ./cmd/loadgen $(ARGS)

fmt:
	$(GO) fmt $(PKGS)

vet:
	$(GO) vet $(PKGS)

# Removes build output only; .bin/ (goaws, mailpit, local-aws-sqs) is kept because rebuilding takes minutes.
clean:
	rm -rf bin/
