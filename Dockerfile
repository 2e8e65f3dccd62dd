# One image, both services: crewkit-api and crewkit-worker (and the crewkit CLI).
# docker build -t crewkit . ; see compose.yaml.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin crewkit-api --bin crewkit-worker --bin crewkit \
    && mkdir -p /out && cp target/release/crewkit-api target/release/crewkit-worker target/release/crewkit /out/

FROM debian:bookworm-slim
# curl for the healthchecks; ca-certificates for TLS to managed databases (rustls, no OpenSSL).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
USER 10001
EXPOSE 8080 9091
CMD ["crewkit-api"]
