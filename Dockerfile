# syntax=docker/dockerfile:1
#
# orderd image (the last stage, the default target) and the goaws SQS emulator image
# (target "goaws") used by docker-compose.yml.
#
#   docker build -t orderd .
#   docker build --target goaws -t goaws:v0.5.4 .

ARG GO_VERSION=1.26
ARG ALPINE_VERSION=3.22

# ---- orderd build
FROM golang:${GO_VERSION} AS build
WORKDIR /src
# Dependencies first, so code changes do not re-download modules.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/orderd ./cmd/orderd

# ---- goaws (SQS emulator) build: the Go module proxy serves v0.5.4, the newest tag.
FROM golang:${GO_VERSION} AS goaws-build
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOBIN=/out go install github.com/Admiral-Piett/goaws/app/cmd@v0.5.4 \
    && mv /out/cmd /out/goaws

# ---- goaws image. Alpine rather than distroless: busybox wget serves the healthcheck.
FROM alpine:${ALPINE_VERSION} AS goaws
COPY --from=goaws-build /out/goaws /usr/local/bin/goaws
USER nobody
EXPOSE 4100
ENTRYPOINT ["/usr/local/bin/goaws"]
# Section "Docker" of the mounted config: queue URLs name the host "goaws".
CMD ["-config", "/conf/goaws.yaml", "-loglevel", "error", "Docker"]

# ---- orderd image. Alpine rather than distroless: docker-compose.yml runs
# `orderd migrate && orderd serve` through sh. Alpine's base already carries the CA
# bundle needed to reach real AWS.
FROM alpine:${ALPINE_VERSION}
COPY --from=build /out/orderd /usr/local/bin/orderd
USER nobody
ENV HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
CMD ["orderd", "serve"]
