# The controller in a container. It must run privileged, with the host's cgroup
# tree delegated to it (cgroupns=host or a delegated cgroup v2 subtree):
#   docker run --privileged --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup -p 9000:9000 petrel
# Not built on the project's machines (they have no Docker engine): Tests/E2E/test_dockerfile.py
# checks its steps instead (each package exists in Debian, the build stage installs what
# Scripts/setup installs for the build, the runtime stage every library petreld links).
FROM swift:6.3-bookworm AS build
WORKDIR /src
RUN apt-get update -qq && apt-get install -y -qq libseccomp-dev libcap-dev libsqlite3-dev libnftables-dev zlib1g-dev \
      librabbitmq-dev libpq-dev librdkafka-dev >/dev/null
COPY . .
RUN swift build -c release --product petreld && swift build -c release --product petrel-init && swift build -c release --product petrel

FROM swift:6.3-bookworm-slim
RUN apt-get update -qq && apt-get install -y -qq libseccomp2 libnftables1 libsqlite3-0 librabbitmq4 libpq5 librdkafka1 zlib1g \
      nftables iproute2 e2fsprogs util-linux python3 nodejs ruby >/dev/null && rm -rf /var/lib/apt/lists/*
# petrel-init (the sandboxes' PID 1) must sit beside petreld.
COPY --from=build /src/.build/release/petreld /src/.build/release/petrel-init /src/.build/release/petrel /usr/local/bin/
# petreld finds its rootfs and Config/petreld.toml side by side (PETREL_ROOTFS overrides).
COPY rootfs /usr/share/petrel/rootfs
COPY Config /usr/share/petrel/Config
ENV PETREL_ROOTFS=/usr/share/petrel/rootfs
VOLUME /var/lib/petrel
EXPOSE 9000
ENTRYPOINT ["/usr/local/bin/petreld"]
CMD ["serve", "--listen", "0.0.0.0:9000"]
