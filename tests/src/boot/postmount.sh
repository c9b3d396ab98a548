echo "Mounting initial store"
(
set -eux
mkdir -p /mnt-root/nix/.squash
mkdir -p /mnt-root/nix/store

# the manifest splits the /nix/store/.... path with a " " to
# prevent Nix from determining it depends on things.
for f in $(cat /nix-store-isos | sed 's/ //'); do
  prefix=$(basename "$(dirname "$f")")
  suffix=$(basename "$f")
  dest="$prefix$suffix"
  echo "$dest"
  mkdir "/mnt-root/nix/.squash/$dest"
  mount -t squashfs -o loop "$f" "/mnt-root/nix/.squash/$dest"
  (
    cd /mnt-root/nix/store/
    cp -ar "../.squash/$dest/$dest" "./$dest"
  )
  umount "/mnt-root/nix/.squash/$dest"
  rm "$f"
  set +x
done
ls -la /mnt-root/nix/store | grep system-nixos
ls -la /mnt-root/nix/store/*-nixos-system*/
ls -la /mnt-root/nix/store/*-nixos-system*/*
)
