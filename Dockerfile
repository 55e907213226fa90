# The hoox image: `hoox`, `hoox-ingest` and `hoox-consumer` on Debian slim, run as an
# unprivileged user. compose.yml builds it and picks the program per service.

FROM rust:1-bookworm AS build
WORKDIR /src

# Dependencies first, in a layer of their own: it is rebuilt only when a manifest or
# Cargo.lock changes, not on every source edit. The workspace's own crates are stubs
# here (empty libraries, empty mains), so only the dependencies are really compiled.
# A new member or binary needs a line here too; the build fails loudly until it has
# one, since the workspace cannot load without the member's manifest.
COPY Cargo.toml Cargo.lock ./
COPY common/Cargo.toml common/build.rs common/
COPY ingest/Cargo.toml ingest/
COPY consumer/Cargo.toml consumer/
RUN mkdir -p src common/src ingest/src consumer/src \
    && touch src/lib.rs common/src/lib.rs ingest/src/lib.rs consumer/src/lib.rs \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > ingest/src/main.rs \
    && echo 'fn main() {}' > consumer/src/main.rs \
    && cargo build --release --locked --bins \
    && rm -r src common/src ingest/src consumer/src

# The real sources. The migrations are embedded into the binaries at compile time
# (`sqlx::migrate!` in common/src/db.rs), so they are needed here, not at run time.
COPY common/src common/src
COPY ingest/src ingest/src
COPY consumer/src consumer/src
COPY src src
COPY migrations migrations
# Where askama finds the dashboard's templates (under src/), compiled into `hoox`.
COPY askama.toml askama.toml
# COPY keeps the files' own times, which can be older than the stubs' build: touching
# each crate's roots makes cargo rebuild our crates instead of keeping the stubs.
RUN touch src/lib.rs src/main.rs common/src/lib.rs ingest/src/lib.rs ingest/src/main.rs \
        consumer/src/lib.rs consumer/src/main.rs \
    && cargo build --release --locked --bins

FROM debian:bookworm-slim
# The system's CA roots and nothing else. hoox's own TLS clients carry theirs
# (webpki-roots); these serve anything else run in the container. No curl: the health
# checks in compose.yml speak HTTP with bash, which Debian always has.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 hoox \
    && useradd --system --uid 10001 --gid hoox --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin hoox
COPY --from=build /src/target/release/hoox /src/target/release/hoox-ingest \
    /src/target/release/hoox-consumer /usr/local/bin/
# Numeric, so orchestrators that require a non-root user can check it without
# reading /etc/passwd.
USER 10001:10001
# Three programs and no one default: the service names its own (`hoox-ingest`,
# `hoox-consumer`, `hoox migrate`); without one, the image lists the commands.
CMD ["hoox", "--help"]
