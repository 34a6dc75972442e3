FROM rust:1.90-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p escalations

FROM debian:bookworm-slim
# curl: the compose health checks.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/escalations /usr/local/bin/escalations
# 8080: the public API; 8090: the simulator; 9180-9182: the admin listener of ingress, worker, all (never public).
EXPOSE 8080 8090 9180 9181 9182
ENTRYPOINT ["escalations"]
