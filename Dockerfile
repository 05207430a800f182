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
# No shell in a scratch image: the binary probes its own /health. Without a URL, `healthcheck`
# probes where the configuration it sees serves /health: metrics_listen if set, else listen
# (0.0.0.0 probed as 127.0.0.1). It sees the container's environment (GHOSTMESH_TRACKER_LISTEN,
# GHOSTMESH_TRACKER_METRICS_LISTEN, GHOSTMESH_TRACKER_CONFIG for a mounted file) but not the
# flags of CMD, so with the default CMD it probes the default listen port, 8000, which also
# answers /health. Configure through the environment and the check follows. When the flags move
# the ports, or TLS is on `listen` with no metrics_listen (exit 2: no plain-HTTP /health to
# find), override the check in exec form (there is no shell for CMD-SHELL):
#   docker-compose.yml:  healthcheck: { test: ["CMD", "/ghostmesh-tracker", "healthcheck",
#                                              "http://127.0.0.1:<port>/health"] }
#   Docker API (testcontainers: Healthcheck::cmd): the same command, as
#   harness/tests/container.rs does for a tracker on port 8123.
HEALTHCHECK --interval=10s --timeout=3s --start-period=2s --retries=3 \
    CMD ["/ghostmesh-tracker", "healthcheck"]
ENTRYPOINT ["/ghostmesh-tracker"]
CMD ["--listen", "0.0.0.0:8000", "--metrics-listen", "0.0.0.0:9000"]
