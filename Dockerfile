# voucherd: multi-stage build on Debian bookworm.
# The runtime stage has only the shared libraries voucherd links and runs as a
# non-root user; `voucherd` is the entrypoint (e.g. `docker run IMAGE migrate`); by default it
# runs the worker with its HTTP surface on 0.0.0.0:8080.

FROM debian:bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      g++ cmake ninja-build pkg-config \
      libpq-dev libpqxx-dev libfmt-dev libhiredis-dev libssl-dev \
      libboost1.81-dev libboost-json1.81-dev libboost-program-options1.81-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY src ./src
COPY sql ./sql
COPY migrations ./migrations
COPY scripts/git-version.cmake ./scripts/
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DVOUCHERD_TESTS=OFF \
 && cmake --build /build \
 && strip /build/voucherd

FROM debian:bookworm AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libpq5 libpqxx-6.4 libfmt9 libhiredis0.14 libssl3 \
      libboost-json1.81.0 libboost-program-options1.81.0 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin voucherd
COPY --from=build /build/voucherd /usr/local/bin/voucherd
USER voucherd
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/voucherd"]
# The worker on the Postgres queue, its HTTP surface open to other hosts:
# it needs VOUCHERD_HTTP_TOKEN_FILE (or VOUCHERD_HTTP_TOKEN) and the database
# (VOUCHERD_DATABASE_URL_FILE, DATABASE_URL or PG* variables).
CMD ["worker", "--source", "pg", "--http", "0.0.0.0:8080"]
