# Builds the api and worker binaries into one small image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p api -p worker --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/api /usr/local/bin/api
COPY --from=build /src/target/release/worker /usr/local/bin/worker
ENV BIND=0.0.0.0:8080
EXPOSE 8080 9090
CMD ["api"]
