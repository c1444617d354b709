# neptun-chat container image: build on the full Rust image, run on bookworm-slim with
# only the binary copied over. Classic instructions only (no heredocs, no COPY --link),
# so Docker BuildKit and podman/buildah build it alike.
#
#   docker build -t neptun-chat .
#   docker run -d --name neptun -p 8080:8080 -v neptun-data:/data neptun-chat
#   docker exec neptun neptun-chat user create alice      # admin commands, same binary
#
# On PostgreSQL, set NEPTUN_DATABASE to a postgresql:// URL (the /data volume then goes
# unused); compose.yaml runs two instances on one database behind nginx.

FROM rust:1.95-bookworm AS builder
WORKDIR /app

# Compile the dependencies against stub sources first, so this layer is reused until
# Cargo.toml, Cargo.lock or .cargo/config.toml (SQLite's build flags) change. The
# [[test]] target's path is not needed to build; an [[example]] that Cargo.toml names
# must exist for the manifest to load, so a stub stands in for it (and stays: the image
# builds no examples).
COPY .cargo ./.cargo
COPY Cargo.toml Cargo.lock ./
RUN mkdir src examples \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > examples/bench_postgres.rs \
    && cargo build --release --locked \
    && rm -rf src

# `cargo clean -p` drops the stub's artifacts, so the real sources are always rebuilt,
# whatever their modification times say. schema.sql and assets/ are compiled in
# (include_str!/include_bytes!); keep this list and .dockerignore's in step.
COPY schema.sql ./
COPY assets ./assets
COPY src ./src
RUN cargo clean --release -p neptun-chat \
    && cargo build --release --locked


FROM debian:bookworm-slim AS runtime

# The CA certificates are what `sslmode=verify-full` (and verify-ca) checks a
# PostgreSQL server's certificate against when the URL names no sslrootcert file.
# A fixed uid/gid, so volume ownership and a `runAsNonRoot` check do not depend on
# the order of accounts in the image. /data is created and handed over before VOLUME:
# a fresh named volume copies that ownership and stays writable for this user.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 neptun \
    && useradd --uid 10001 --gid neptun --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin neptun \
    && mkdir /data \
    && chown neptun:neptun /data

COPY --from=builder /app/target/release/neptun-chat /usr/local/bin/neptun-chat

ENV NEPTUN_BIND=0.0.0.0:8080 \
    NEPTUN_DATABASE=/data/neptun.db
VOLUME /data
USER 10001:10001
EXPOSE 8080

# The binary probes its own /healthz (which also pings the database); no curl needed.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["neptun-chat", "healthcheck"]

# SIGTERM (the default stop signal) makes actix finish in-flight requests and exit.
# Arguments replace CMD: `docker run IMAGE user create alice`.
ENTRYPOINT ["neptun-chat"]
CMD ["serve"]
