# The tracker as operators deploy it: one statically linked binary in an empty image.
# Nothing is pulled (FROM scratch is built in); build the binary and the image with
#   scripts/build-images.sh
# which places the binary in target/docker/tracker/ (the build context) first.
FROM scratch
COPY ghostmesh-tracker /ghostmesh-tracker
# nobody:nogroup; the tracker needs no privileges (its ports are above 1024).
USER 65534:65534
# WebSocket clients (ws://, or wss:// with tls_cert/tls_key), then /metrics and /stats.json.
EXPOSE 8000 9000
# No shell in a scratch image: the binary probes its own /health. `healthcheck` takes only
# a URL (it reads neither --config nor GHOSTMESH_TRACKER_*), so this probe fits the default
# CMD below (/health on port 8000). When the tracker answers /health elsewhere (a mounted
# config or GHOSTMESH_TRACKER_LISTEN with another port; TLS on `listen`, where /health is
# only plain HTTP on `metrics_listen`), the container goes unhealthy unless the check is
# overridden, in exec form (there is no shell for CMD-SHELL, so `docker run --health-cmd`
# cannot do it):
#   docker-compose.yml:  healthcheck: { test: ["CMD", "/ghostmesh-tracker", "healthcheck",
#                                              "http://127.0.0.1:<port>/health"] }
#   Docker API (testcontainers: Healthcheck::cmd): the same command, as
#   harness/tests/container.rs does for a tracker on port 8123.
HEALTHCHECK --interval=10s --timeout=3s --start-period=2s --retries=3 \
    CMD ["/ghostmesh-tracker", "healthcheck", "http://127.0.0.1:8000/health"]
ENTRYPOINT ["/ghostmesh-tracker"]
CMD ["--listen", "0.0.0.0:8000", "--metrics-listen", "0.0.0.0:9000"]
