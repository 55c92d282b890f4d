# Who's Looking: a release build in the official Swift image, run from a slim Debian image.
FROM swift:6.2-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libpq-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /build
# The manifest names the test targets too, so their folders must exist for it to load.
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --product whoslooking --static-swift-stdlib \
    && cp "$(swift build -c release --show-bin-path)/whoslooking" /build/whoslooking

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libpq5 ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /app --shell /usr/sbin/nologin whoslooking
WORKDIR /app
COPY --from=build /build/whoslooking /usr/local/bin/whoslooking
COPY Public ./Public
COPY Migrations ./Migrations
USER whoslooking
ENV HOST=0.0.0.0 \
    PORT=8080 \
    PUBLIC_DIR=/app/Public \
    MIGRATIONS_DIR=/app/Migrations \
    LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["whoslooking", "probe", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["whoslooking"]
CMD ["serve"]
