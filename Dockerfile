# syntax=docker/dockerfile:1
# pgtenant's image: a static binary on distroless, run as a non-root user.
#   docker build -t pgtenant .
#   docker run -e PGTENANT_BACKEND=postgres://... -p 6432:6432 pgtenant
# docker-compose.yml starts it with a PostgreSQL 15 to try it out.
# `make check-packaging` runs this file's build stage here, without Docker
# (scripts/build-static.sh, the same script with the same flags), and checks
# the file's shape (packaging/packaging_test.go).

FROM golang:1.26-bookworm AS build
WORKDIR /src
# The modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN scripts/build-static.sh /out/pgtenant . && \
    scripts/build-static.sh /out/healthcheck ./packaging/healthcheck

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/pgtenant /out/healthcheck /usr/local/bin/
# distroless's nonroot user (65532), numeric so that Kubernetes'
# runAsNonRoot can check it.
USER 65532:65532
# In a container, listen on every interface: the port is published, not
# reachable from outside until it is.
ENV PGTENANT_LISTEN=0.0.0.0:6432
EXPOSE 6432
# There is no shell or psql in the image: the healthcheck binary asks the
# listener for an SSLRequest answer, proving pgtenant serves (it reads
# PGTENANT_LISTEN too). It does not log in, so it says nothing about the
# backend: a down backend shows in clients' errors and the metrics.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/healthcheck"]
ENTRYPOINT ["/usr/local/bin/pgtenant"]
CMD ["serve"]
