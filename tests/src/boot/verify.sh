#!/bin/sh
# Describes $NETBOOT_ROOT/nix/store (stage 1: /mnt-root; stage 2: the root
# itself, NETBOOT_ROOT empty) as one canonical line per entry, compares it
# with what the media should contain, and prints the verdict. Store paths
# named (in hex) in $etc/unlisted are left out of the listing, though
# still checked as registered.
# Line: hex(name) type perm uid gid size mtime nlink linkgroup content
#   name relative to the store; size/nlink "-" for directories; linkgroup =
#   hex name of the first (sorted) entry sharing the inode when nlink > 1;
#   content = sha256 (files), hex target (symlinks), major:minor (devices);
#   mtime, nlink, linkgroup "-" for symlinks: the seed's `cp -ar` (busybox)
#   keeps neither symlink mtimes nor hard links between symlinks.
status=$1
root=${NETBOOT_ROOT-/mnt-root}
store=${NETBOOT_STORE:-$root/nix/store}
etc=${NETBOOT_ETC:-/etc/netboot}
tmp=${NETBOOT_TMP:-/tmp}
fail=""
[ "$status" = 0 ] || fail="$fail postMountCommands-status-$status"

init=""
for a in $(cat /proc/cmdline); do
  case "$a" in init=*) init=${a#init=} ;; esac
done

if cd "$store"; then
  skip="./nix-path-registration"
  find . -mindepth 1 ! -path "$skip" -print0 > "$tmp/names0"
  find . -mindepth 1 ! -path "$skip" -exec stat -c '%a|%u|%g|%s|%Y|%h|%i|%t:%T|%F' {} + > "$tmp/stat"
  find . -mindepth 1 ! -path "$skip" -type f -exec sha256sum {} + > "$tmp/sums"
  find . -mindepth 1 ! -path "$skip" -type l -exec sh -c \
    'for l; do readlink -n "$l" | od -An -v -tx1 | tr -d " \n"; echo; done' sh {} + > "$tmp/links"
  # NUL-separated names -> one hex line each, without the leading "./".
  od -An -v -tx1 "$tmp/names0" |
    awk '{ for (i = 1; i <= NF; i++) { if ($i == "00") { print substr(s, 5); s = "" } else s = s $i } }' > "$tmp/names"
  awk -F'|' -v names="$tmp/names" -v sums="$tmp/sums" -v links="$tmp/links" '
    function nextsum(   l) {
      # sha256sum prints "HASH  ./name"; a name may contain newlines, so
      # records are the lines that look like a record start.
      while ((getline l < sums) > 0)
        if (length(l) > 68 && substr(l, 65, 4) == "  ./") return substr(l, 1, 64)
      return "missing-sum"
    }
    {
      if ((getline n < names) <= 0) n = "missing-name"
      perm = $1; while (length(perm) < 4) perm = "0" perm
      size = $4; nl = $6; ino = ($6 > 1) ? $7 : "-"; c = "-"
      if ($9 == "directory") { ty = "d"; size = "-"; nl = "-"; ino = "-" }
      else if ($9 ~ /regular/) { ty = "f"; c = nextsum() }
      else if ($9 == "symbolic link") {
        # busybox cp -a (the seed copy) keeps neither symlink mtimes nor
        # hard links between symlinks (the images do hold both).
        ty = "l"; $5 = "-"; nl = "-"; ino = "-"; if ((getline c < links) <= 0) c = "missing-link"
      }
      else if ($9 == "fifo") { ty = "p"; size = "-" }
      else if ($9 ~ /character/) { ty = "c"; size = "-"; c = $8 }
      else if ($9 ~ /block/) { ty = "b"; size = "-"; c = $8 }
      else if ($9 == "socket") { ty = "s"; size = "-" }
      else ty = "?"
      print n, ty, perm, $2, $3, size, $5, nl, ino, c
    }' "$tmp/stat" | sort |
    awk '{ if ($9 != "-") { if (!($9 in g)) g[$9] = $1; $9 = g[$9] } print }' > "$tmp/listing"
  if [ -f "$etc/unlisted" ]; then
    # Store paths (hex names) whose contents cannot be listed in advance:
    # a stage 1 that is itself in the closure cannot describe its own file.
    awk 'NR == FNR { u[$1] = 1; next }
         { top = ""; for (i = 1; i < length($1); i += 2) { p = substr($1, i, 2); if (p == "2f") break; top = top p }
           if (!(top in u)) print }' "$etc/unlisted" "$tmp/listing" > "$tmp/listed"
    mv "$tmp/listed" "$tmp/listing"
  fi
  echo "NETBOOT-LISTING-BEGIN"
  cat "$tmp/listing"
  echo "NETBOOT-LISTING-END"
  if [ -f "$etc/expected-listing" ]; then
    if cmp -s "$etc/expected-listing" "$tmp/listing"; then
      echo "NETBOOT-CHECK: store matches the closure ($(wc -l < "$tmp/listing") entries)"
    else
      fail="$fail store-differs"
      echo "NETBOOT-CHECK: store differs from the closure (- expected, + found):"
      diff "$etc/expected-listing" "$tmp/listing" | head -n 60
    fi
  fi

  reg="$store/nix-path-registration"
  if [ -f "$reg" ]; then
    # Registration dump: path, narHash, narSize, deriver, count, references.
    awk '{ if (s == 0) { print; s = 1 } else if (s < 4) s++
           else if (s == 4) { n = $1 + 0; s = (n > 0) ? 5 : 0 }
           else { n--; if (n == 0) s = 0 } }' "$reg" | sort > "$tmp/regpaths"
    echo "NETBOOT-REGISTRATION-BEGIN"
    cat "$tmp/regpaths"
    echo "NETBOOT-REGISTRATION-END"
    echo "NETBOOT-REGISTRATION-SHA256: $(sha256sum < "$reg" | cut -c1-64)"
    while read -r p; do
      [ -e "$root$p" ] || [ -L "$root$p" ] || { fail="$fail registered-path-missing"; echo "NETBOOT-CHECK: $p registered but absent"; }
    done < "$tmp/regpaths"
    if [ -f "$etc/expected-paths" ]; then
      if cmp -s "$etc/expected-paths" "$tmp/regpaths"; then
        echo "NETBOOT-CHECK: registration lists exactly the closure"
      else
        fail="$fail registration-differs"
        diff "$etc/expected-paths" "$tmp/regpaths" | head -n 20
      fi
    fi
  else
    fail="$fail no-registration"
  fi
else
  fail="$fail no-store"
fi

if [ -z "$init" ]; then
  fail="$fail no-init-parameter"
else
  p="$root$init"
  if [ -L "$p" ]; then
    t=$(readlink "$p")
    case "$t" in /*) p="$root$t" ;; *) p="$(dirname "$p")/$t" ;; esac
  fi
  if [ -e "$p" ]; then
    echo "NETBOOT-CHECK: init $init exists"
  else
    fail="$fail init-missing"
  fi
fi

if [ -z "$fail" ]; then
  echo "NETBOOT-VERDICT: ok"
else
  echo "NETBOOT-VERDICT: fail$fail"
fi
