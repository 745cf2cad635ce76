# keyflow's production image: `keyflow serve` on a slim Debian, built with
# -tags nodev (no keyflow dev, no embedded Temporal server; see
# docs/scaling.md for the two binaries' sizes).
#
#   docker build -t keyflow:dev .
#   docker build --build-arg WITH_SOFTHSM=true -t keyflow:softhsm .
#   docker run --rm -v $PWD/keyflow.yaml:/etc/keyflow/keyflow.yaml:ro keyflow:dev
#
# The HSM: keyflow loads the PKCS#11 library named by hsm.module in
# keyflow.yaml (or the environment's KEYFLOW_HSM_MODULE, which overrides the
# file). Mount your vendor's module into the container (or COPY it in a
# derived image) and name its path there. WITH_SOFTHSM=true installs
# Debian's softhsm2 (/usr/lib/softhsm/libsofthsm2.so) for trials.

ARG GO_VERSION=1.26.8
ARG DEBIAN_RELEASE=bookworm

FROM golang:${GO_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
# PKCS#11 goes through cgo (dlopen of the vendor's module): gcc comes with
# the golang image.
ENV CGO_ENABLED=1 GOTOOLCHAIN=local
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
RUN go build -tags nodev -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/keyflow ./cmd/keyflow

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG WITH_SOFTHSM=false
RUN set -eu; \
    pkgs="ca-certificates"; \
    if [ "$WITH_SOFTHSM" = "true" ]; then pkgs="$pkgs softhsm2"; fi; \
    apt-get update; \
    apt-get install -y --no-install-recommends $pkgs; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system --gid 10001 keyflow; \
    useradd --system --uid 10001 --gid keyflow --home-dir /var/lib/keyflow --create-home --shell /usr/sbin/nologin keyflow; \
    mkdir -p /etc/keyflow
COPY --from=build /out/keyflow /usr/local/bin/keyflow
USER 10001:10001
WORKDIR /var/lib/keyflow
# 9090: /healthz, /readyz, /metrics (ops.listen); 8443: the gateway's XKS proxy.
EXPOSE 9090 8443
ENTRYPOINT ["/usr/local/bin/keyflow"]
CMD ["serve", "--config", "/etc/keyflow/keyflow.yaml"]
