# The controller in a container. It must run privileged, with the host's cgroup
# tree delegated to it (cgroupns=host or a delegated cgroup v2 subtree):
#   docker run --privileged --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup petrel
FROM swift:6.0-bookworm AS build
WORKDIR /src
RUN apt-get update -qq && apt-get install -y -qq libseccomp-dev libcap-dev libsqlite3-dev libnftables-dev zlib1g-dev >/dev/null
COPY . .
RUN swift build -c release --product petreld && swift build -c release --product petrel-init && swift build -c release --product petrel

FROM swift:6.0-bookworm-slim
RUN apt-get update -qq && apt-get install -y -qq libseccomp2 libnftables1 libsqlite3-0 nftables iproute2 e2fsprogs util-linux \
      python3 nodejs >/dev/null && rm -rf /var/lib/apt/lists/*
# petrel-init (the sandboxes' PID 1) must sit beside petreld.
COPY --from=build /src/.build/release/petreld /src/.build/release/petrel-init /src/.build/release/petrel /usr/local/bin/
# petreld finds its rootfs and Config/petreld.toml side by side (PETREL_ROOTFS overrides).
COPY rootfs /usr/share/petrel/rootfs
COPY Config /usr/share/petrel/Config
ENV PETREL_ROOTFS=/usr/share/petrel/rootfs
VOLUME /var/lib/petrel
ENTRYPOINT ["/usr/local/bin/petreld"]
# Loopback only until request signatures are verified (the authentication issue).
CMD ["serve"]
