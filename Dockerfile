# Chaperone: multi-stage build. The runtime image has only the binary.
#   docker build -t chaperone .
#   docker run -v $PWD/deploy/chaperone.toml:/etc/chaperone/chaperone.toml chaperone
# Not built in this repository's CI (no Docker engine there); see docs/operations.md.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin chaperone

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/chaperone chaperone \
    && mkdir -p /var/lib/chaperone/spool /etc/chaperone \
    && chown -R chaperone /var/lib/chaperone
COPY --from=build /src/target/release/chaperone /usr/local/bin/chaperone
USER chaperone
# 3307: MySQL protocol; 9307: metrics and health; 8080: audit UI/API; 8443: credentials/approvals API.
EXPOSE 3307 9307 8080 8443
ENTRYPOINT ["chaperone"]
CMD ["serve", "--config", "/etc/chaperone/chaperone.toml"]
