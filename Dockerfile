# syntax=docker/dockerfile:1
# The operator's container image: docker build -t ghcr.io/enclave-operator/enclave-operator:0.1.0 .
# (the chart's default image: values.yaml image.repository, Chart.yaml appVersion).
# Machines without Docker build the same image with `make image` (hack/image.sh).

# bookworm, like the runtime image: the binary links glibc dynamically and must not
# need a newer glibc than Debian 12's.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# Cargo's registry and target dir are cache mounts, so the binary is copied out in the
# same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin enclave-operator \
    && install -D -m 0755 target/release/enclave-operator /out/enclave-operator

# glibc, libgcc_s, CA certificates and a nonroot user (65532); no shell. TLS is rustls,
# so no OpenSSL is needed.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="enclave-operator" \
      org.opencontainers.image.description="Keeps personal data inside a jurisdiction's enclave on Kubernetes, and proves it." \
      org.opencontainers.image.source="https://github.com/enclave-operator/enclave-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/enclave-operator /enclave-operator
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/enclave-operator"]
