# The [Service] settings of `netboot serve` as a systemd unit, everything but
# ExecStart: one plain attribute set (no nixpkgs `lib`), used as is by the
# NixOS module (nix/serve.nix, `serviceConfig`) and checked line for line
# against examples/netboot-serve.service by tests/tests/service_unit.rs
# (`nix-instantiate --eval --strict --json`). A list is one line per item, as
# NixOS writes it; `true` is written `yes`.
#
# The server reads the Nix store and the systems' profile links, writes only
# its cache, and talks HTTP: a dynamic unprivileged user, a read-only file
# system but for CacheDirectory, no capabilities, Internet and local sockets
# only, and the system calls of an ordinary service.
# `systemd-analyze security` rates it 1.1 ("OK"); what remains is the network
# itself (PrivateNetwork, IPAddressDeny: a boot server answers any client),
# ProtectClock's read access to the RTC, and the host's root directory.
#
# It listens on a high port (8080) so it needs no capability: iPXE fetches
# any URL the DHCP server names (http://HOST:8080/NAME/netboot.ipxe). For
# port 80, add AmbientCapabilities=CAP_NET_BIND_SERVICE and
# CapabilityBoundingSet=CAP_NET_BIND_SERVICE (or put a proxy in front).
{
  Type = "exec";
  Restart = "on-failure";
  RestartSec = "2s";
  # A boot storm holds many connections at once; systemd's default soft
  # limit for services is 1024 descriptors.
  LimitNOFILE = 65536;

  # Who: a user allocated at start, with no capabilities at all.
  DynamicUser = true;
  CapabilityBoundingSet = "";
  AmbientCapabilities = "";
  NoNewPrivileges = true;
  PrivateUsers = true;

  # What it sees: the OS read-only (the store and profile links included),
  # its cache (/var/cache/netboot, kept across restarts) writable, files it
  # creates private to it.
  CacheDirectory = "netboot";
  UMask = "0077";
  ProtectSystem = "strict";
  ProtectHome = true;
  PrivateTmp = true;
  PrivateDevices = true;
  DevicePolicy = "closed";
  PrivateIPC = true;
  PrivateMounts = true;
  ProtectProc = "invisible";
  ProcSubset = "pid";
  RemoveIPC = true;

  # The kernel and the rest of the system: hands off.
  ProtectHostname = true;
  ProtectClock = true;
  ProtectKernelTunables = true;
  ProtectKernelModules = true;
  ProtectKernelLogs = true;
  ProtectControlGroups = true;
  RestrictNamespaces = true;
  RestrictRealtime = true;
  RestrictSUIDSGID = true;
  LockPersonality = true;
  MemoryDenyWriteExecute = true;

  # HTTP over IPv4/IPv6; AF_UNIX for tokio's signal socketpair.
  RestrictAddressFamilies = "AF_INET AF_INET6 AF_UNIX";
  SystemCallArchitectures = "native";
  SystemCallFilter = [ "@system-service" "~@privileged @resources" ];
  SystemCallErrorNumber = "EPERM";
}
