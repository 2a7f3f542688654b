# Container images of zenko-memcached: one build stage for the workspace, one runtime target per binary.
#   docker build --target sidecar  -t zenko/zenko-memcached-sidecar:0.1.0 .
#   docker build --target operator -t zenko/zenko-memcached-operator:0.1.0 .
# One shared build stage rather than a Dockerfile per crate: both binaries share most of their
# dependencies, and the recipe exists once.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep crates and build artefacts between builds; the binaries are copied out
# of the target cache because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p zenko-memcached-sidecar -p zenko-memcached-operator \
    && install -D -t /out target/release/zenko-memcached-sidecar target/release/zenko-memcached-operator

# glibc and libgcc only, no shell, running as the unprivileged uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
USER 65532:65532

# The sidecar: 9991 data (HTTP), 9990 metadata (socket.io), 9992 health and metrics. Its Swarm
# health check runs the binary itself (`--probe`), since the image has no shell.
FROM runtime AS sidecar
COPY --from=build /out/zenko-memcached-sidecar /usr/local/bin/zenko-memcached-sidecar
EXPOSE 9990 9991 9992
ENTRYPOINT ["/usr/local/bin/zenko-memcached-sidecar"]

# The operator: the controller by default (/healthz, /readyz, /metrics on 8080); `stack`,
# `manifests` and `crd` work as well.
FROM runtime AS operator
COPY --from=build /out/zenko-memcached-operator /usr/local/bin/zenko-memcached-operator
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/zenko-memcached-operator"]
CMD ["run"]
