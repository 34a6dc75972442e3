FROM rust:1.90-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p escalations

FROM debian:bookworm-slim
# curl: the compose health checks.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/escalations /usr/local/bin/escalations
EXPOSE 8080 8090
ENTRYPOINT ["escalations"]
