# An image around a program of the machine that builds it (the local
# broker, Debian's Prometheus) for docker/compose.local.yml, where no
# image registry is reachable: scripts/image.sh tools.
FROM debian:bookworm-slim
ARG PROGRAM
COPY ${PROGRAM} /usr/local/bin/${PROGRAM}
