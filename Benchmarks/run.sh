#!/usr/bin/env bash
# remedy's benchmark: wall time and peak memory, measured side by side in one run on the same images.
#
#   Benchmarks/run.sh [--quick] [--drivers-only] [--no-alternatives] [--accel tcg|kvm|auto] [--out DIR]
#
# The images carry hives of real size: a real Windows SYSTEM hive (11.8 MB, regipy's, from Tests/Fixtures) and a
# SOFTWARE hive grown past 60 MB with installed-product keys (remedy-dev make-image --real-system --software-mib).
# Prints a Markdown table: the bare appliance launch (the floor), remedy plan and apply on one image, the same on a
# 40 GiB and a 1 TiB sparse image, the batch alternatives (appliances in parallel, several images per appliance),
# remedy batch on 10 and 20 images, and virt-v2v-in-place on the same images one by one (Debian's virt-v2v with
# nbdkit), with ratios.
# --quick measures virt-v2v-in-place on 3 images and says so (per-image mean, not extrapolated further).
# --no-alternatives leaves out the batch alternatives (section 3: four batches of 10 images, about 20 minutes).
# Needs: .ci/setup done; apt-get install virt-v2v nbdkit (the script offers the command if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0; drivers_only=0; alternatives=1; accel=tcg; out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --drivers-only) drivers_only=1 ;;
    --no-alternatives) alternatives=0 ;;
    --accel) accel="$2"; shift ;;
    --out) out="$2"; shift ;;
    *) echo "usage: $0 [--quick] [--drivers-only] [--no-alternatives] [--accel tcg|kvm|auto] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done

work=${out:-$(mktemp -d /var/tmp/remedy-bench.XXXXXX)}
mkdir -p "$work"
export REMEDY_ACCEL="$accel" LIBGUESTFS_BACKEND=direct REMEDY_TIMINGS=1
[ "$accel" = tcg ] && export LIBGUESTFS_BACKEND_SETTINGS=force_tcg

echo "building remedy (release)..." >&2
swift build -c release --product remedy >&2
swift build -c release --product remedy-dev >&2
remedy=$(swift build -c release --show-bin-path)/remedy
remedy_dev=$(swift build -c release --show-bin-path)/remedy-dev
# The binary reads policies at run time: measure against a snapshot, not a tree that may change meanwhile.
rm -rf "$work/Policies" "$work/Payloads"; cp -r Policies "$work/Policies"; cp -r Payloads "$work/Payloads"
export REMEDY_POLICIES="$work/Policies" REMEDY_PAYLOADS_DIR="$work/Payloads"

# Peak memory of a command and everything it starts (qemu included): the sum of the resident sets of the
# process tree, sampled every 0.2 s. GNU time's %M only sees the largest single process.
measure() {  # measure LABEL CMD... -> sets $secs and $peak_mib; output of CMD goes to $work/LABEL.log
  local label=$1; shift
  local start end pid peak=0 now
  start=$(date +%s.%N)
  "$@" > "$work/$label.log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    now=$(ps -eo pid=,ppid=,rss= | awk -v root="$pid" '
      { parent[$1] = $2; rss[$1] = $3 }
      END { for (p in rss) { q = p; while (q != "" && q != 0 && q != root) q = parent[q]; if (q == root) sum += rss[p] } print sum + 0 }')
    [ "$now" -gt "$peak" ] && peak=$now
    sleep 0.2
  done
  wait "$pid" || true
  end=$(date +%s.%N)
  secs=$(awk -v a="$end" -v b="$start" 'BEGIN { printf "%.2f", a - b }')
  peak_mib=$((peak / 1024))
}

rows=()
row() { rows+=("| $1 | $(printf '%.1f' "$2") | $3 | $4 |"); printf '%-58s %7.1f s %6s MiB  %s\n' "$1" "$2" "$3" "$4" >&2; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
add() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a + b }'; }
mul() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a * b }'; }
median3() { printf '%s\n' "$@" | sort -n | sed -n 2p; }

echo "making images with real-size hives in $work ..." >&2
real=(--real-system SYSTEM --software-mib 52 --state vmware-tools --format qcow2)
"$remedy_dev" make-image "${real[@]}" --size-mib 512 -o "$work/base.qcow2" >&2
guestfish --ro -a "$work/base.qcow2" -i filesize /Windows/System32/config/SOFTWARE > "$work/software.size"
fresh() {  # fresh DIR N: N copies of the base image
  rm -rf "$1"; mkdir -p "$1"
  for i in $(seq -w 1 "$2"); do cp --sparse=always "$work/base.qcow2" "$1/img-$i.qcow2"; done
}

# 1. The floor: a bare appliance launch.
t=(); m=0
for i in 1 2 3; do measure bare guestfish -a /dev/null run; t+=("$secs"); m=$peak_mib; done
bare=$(median3 "${t[@]}")
row "bare appliance launch (guestfish -a /dev/null run), median of 3" "$bare" "$m" "1.00"

# 2. One image (without driver injection, as before it existed; then with it).
if [ "$drivers_only" = 0 ]; then
t=()
for i in 1 2 3; do measure inspect guestfish --ro -a "$work/base.qcow2" -i exit; t+=("$secs"); m=$peak_mib; done
x=$(median3 "${t[@]}"); row "guestfish -i (libguestfs full inspect_os + mount), median of 3" "$x" "$m" "$(ratio "$x" "$bare")"
t=()
for i in 1 2 3; do measure plan "$remedy" plan "$work/base.qcow2"; t+=("$secs"); m=$peak_mib; done
plan1=$(median3 "${t[@]}"); row "remedy plan, 1 image, median of 3" "$plan1" "$m" "$(ratio "$plan1" "$bare")"
t=()
for i in 1 2 3; do
  cp --sparse=always "$work/base.qcow2" "$work/one.qcow2"
  measure apply "$remedy" apply "$work/one.qcow2"; t+=("$secs"); m=$peak_mib
done
apply1=$(median3 "${t[@]}"); row "remedy apply, 1 image, median of 3" "$apply1" "$m" "$(ratio "$apply1" "$bare")"

# 2a. Disk size: the same content on a 40 GiB and a 1 TiB sparse disk (the filesystem fills the disk), paired runs.
"$remedy_dev" make-image "${real[@]}" --size-mib 40960 -o "$work/d40g.qcow2" >&2
"$remedy_dev" make-image "${real[@]}" --size-mib 1048576 -o "$work/d1t.qcow2" >&2
p40=(); p1t=(); a40=(); a1t=()
for i in 1 2 3; do
  measure plan-40g "$remedy" plan "$work/d40g.qcow2"; p40+=("$secs")
  measure plan-1t "$remedy" plan "$work/d1t.qcow2"; p1t+=("$secs")
  cp --sparse=always "$work/d40g.qcow2" "$work/one.qcow2"; measure apply-40g "$remedy" apply "$work/one.qcow2"; a40+=("$secs")
  cp --sparse=always "$work/d1t.qcow2" "$work/one.qcow2"; measure apply-1t "$remedy" apply "$work/one.qcow2"; a1t+=("$secs")
done
for what in plan apply; do
  if [ "$what" = plan ]; then x=$(median3 "${p40[@]}"); y=$(median3 "${p1t[@]}"); else x=$(median3 "${a40[@]}"); y=$(median3 "${a1t[@]}"); fi
  row "remedy $what, 40 GiB sparse disk, median of 3" "$x" "-" "$(ratio "$x" "$bare")"
  row "remedy $what, 1 TiB sparse disk, median of 3 (last column: 1 TiB / 40 GiB)" "$y" "-" "$(ratio "$y" "$x")"
done
fi

# 2b. With a virtio-win ISO (remedy's fake one: real layout and INFs, small binaries; only the chosen OS directory
# is read from it, so a real ISO costs the size of that directory more) and a Cloudbase-Init payload.
"$remedy_dev" make-virtio-win --iso "$work/virtio-win.iso" "$work/virtio-win" > /dev/null
head -c 1048576 /dev/urandom > "$work/CloudbaseInitSetup_x64.msi"
inputs=(--virtio-win "$work/virtio-win.iso" --payload "cloudbase-init=$work/CloudbaseInitSetup_x64.msi")
t=()
for i in 1 2 3; do measure plan-virtio "$remedy" plan "$work/base.qcow2" "${inputs[@]}"; t+=("$secs"); m=$peak_mib; done
x=$(median3 "${t[@]}"); row "remedy plan + virtio-win ISO + Cloudbase-Init, 1 image, median of 3" "$x" "$m" "$(ratio "$x" "$bare")"
t=()
for i in 1 2 3; do
  cp --sparse=always "$work/base.qcow2" "$work/one.qcow2"
  measure apply-virtio "$remedy" apply "$work/one.qcow2" "${inputs[@]}"; t+=("$secs"); m=$peak_mib
done
x=$(median3 "${t[@]}"); virtio1=$x; virtio_peak=$m; row "remedy apply + virtio-win ISO + Cloudbase-Init, 1 image, median of 3" "$x" "$m" "$(ratio "$x" "$bare")"
# The proof that the writes are in the file (read back after drop_caches in the appliance, committed ranges read
# back from the image file) and the commit itself, from REMEDY_TIMINGS (seconds, last run); last column: share of the run.
phase_of() { sed -n 's/.*timings: //p' "$work/$1.log" | tr ' ' '\n' | awk -F= -v want="$2" '$1 ~ want { s += $2 } END { printf "%.2f", s }'; }
p=$(phase_of apply-virtio '^proof-'); row "  of which proving the writes (apply above, last run; last column: share)" "$p" "-" "$(ratio "$p" "$secs")"
c=$(phase_of apply-virtio '^(commit|marker)$'); row "  of which marker + qemu-img commit (apply above, last run; share)" "$c" "-" "$(ratio "$c" "$secs")"
fresh "$work/bv" 10
measure batch-apply-virtio "$remedy" batch "$work/bv" --apply "${inputs[@]}"
row "remedy batch --apply + virtio-win ISO + Cloudbase-Init, 10 images, defaults" "$secs" "$peak_mib" "$(ratio "$secs" "$bare")"
# The batch's appliances prove their writes side by side: the summed seconds are shared by its N appliances, so the
# share is of the appliances' time, summed seconds / (N x wall).
n=$(sed -n 's/.*: \([0-9][0-9]*\) appliances\{0,1\} at a time.*/\1/p' "$work/batch-apply-virtio.log" | head -n 1)
p=$(phase_of batch-apply-virtio '^proof-')
row "  of which proving the writes (batch above, summed over its ${n:-1} appliances; share of their time)" "$p" "-" "$(ratio "$p" "$(mul "$secs" "${n:-1}")")"
if [ "$drivers_only" = 1 ]; then
  printf '\n| measurement | wall s | peak MiB | x bare launch |\n|---|---|---|---|\n'
  printf '%s\n' "${rows[@]}"
  exit 0
fi

# 3. Batch alternatives on 10 images (plan): appliances in parallel vs images per appliance.
[ "$alternatives" = 1 ] && for cfg in "1 1" "2 1" "1 10" "2 5"; do
  set -- $cfg
  fresh "$work/alt" 10
  measure "alt-$1-$2" "$remedy" batch "$work/alt" --jobs "$1" --per-appliance "$2"
  row "remedy batch plan, 10 images, --jobs $1 --per-appliance $2" "$secs" "$peak_mib" "$(ratio "$secs" "$bare")"
done

# 4. remedy batch with its defaults on 10 and 20 images.
for n in 10 20; do
  fresh "$work/b$n" "$n"
  measure "batch-plan-$n" "$remedy" batch "$work/b$n"
  row "remedy batch (plan), $n images, defaults" "$secs" "$peak_mib" "$(ratio "$secs" "$bare")"
  measure "batch-apply-$n" "$remedy" batch "$work/b$n" --apply
  eval "batch_apply_$n=$secs"
  row "remedy batch --apply, $n images, defaults" "$secs" "$peak_mib" "$(ratio "$secs" "$bare")"
  jobs=$(sed -n 's/.*: \([0-9][0-9]*\) appliances\{0,1\} at a time.*/\1/p' "$work/batch-apply-$n.log" | head -n 1)
  per_appliance=$((peak_mib / ${jobs:-1})); per_jobs=${jobs:-1}
done

# 5. virt-v2v-in-place on the same images, one by one (as a pipeline runs it).
v2v=""
if command -v virt-v2v-in-place >/dev/null; then
  # Debian ships no rhsrvany.exe/pvvxsvc.exe (virt-v2v refuses Windows without one): give it a stand-in file.
  mkdir -p "$work/virt-tools"; printf 'MZ' > "$work/virt-tools/rhsrvany.exe"
  export VIRT_TOOLS_DATA_DIR="$work/virt-tools"
  fresh "$work/v" 1
  measure v2v-1 virt-v2v-in-place -i disk "$work/v/img-1.qcow2"
  v2v=$secs
  if grep -qi "error" "$work/v2v-1.log" && ! grep -qi "finishing off" "$work/v2v-1.log"; then
    echo "virt-v2v-in-place failed; see $work/v2v-1.log" >&2; v2v=""
  else
    row "virt-v2v-in-place -i disk, 1 image" "$v2v" "$peak_mib" "$(ratio "$v2v" "$bare")"
    count=20; [ "$quick" = 1 ] && count=3
    fresh "$work/v" "$count"
    total=0; peak=0; at10=""
    for i in $(seq -w 1 "$count"); do
      measure "v2v-$i" virt-v2v-in-place -i disk "$work/v/img-$i.qcow2"
      total=$(add "$total" "$secs"); [ "$peak_mib" -gt "$peak" ] && peak=$peak_mib
      [ "$i" = 10 ] && at10=$total
    done
    if [ "$quick" = 1 ]; then
      per=$(ratio "$total" "$count")
      row "virt-v2v-in-place, mean per image over $count (--quick)" "$per" "$peak" "$(ratio "$per" "$bare")"
      v2v10=$(mul "$per" 10); v2v20=$(mul "$per" 20)
    else
      v2v10=$at10; v2v20=$total
      row "virt-v2v-in-place, 10 images one by one" "$v2v10" "$peak" "$(ratio "$v2v10" "$bare")"
      row "virt-v2v-in-place, 20 images one by one" "$v2v20" "$peak" "$(ratio "$v2v20" "$bare")"
    fi
  fi
else
  echo "virt-v2v-in-place not found: apt-get install -y virt-v2v nbdkit" >&2
fi

echo
echo "Benchmark: $(date -u +%Y-%m-%d), $(nproc) cores, accel $accel, remedy $("$remedy" --version), $(virt-v2v-in-place --version 2>/dev/null | head -1 || echo 'no virt-v2v')"
echo "Images: Windows Server 2008 R2 with a real SYSTEM hive (regipy's SYSTEM, 11,771,904 bytes) and a SOFTWARE hive of $(cat "$work/software.size") bytes, VMware Tools, qcow2 of 512 MiB; peak memory = the whole process tree."
echo
echo "| measurement | wall s | peak MiB | x bare launch |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "Targets: plan $(ratio "$plan1" "$bare")x bare (<= 1.15), apply $(ratio "$apply1" "$bare")x bare (<= 1.3), apply with virtio-win and Cloudbase-Init $(ratio "$virtio1" "$bare")x (<= 1.5)."
echo "Peak memory per appliance (target <= 717 MiB): apply with virtio-win and Cloudbase-Init on one image $virtio_peak MiB (remedy and qemu); batch --apply of 20 images $per_appliance MiB (the whole tree over its $per_jobs appliances)."
if [ -n "$v2v" ]; then
  echo "apply vs virt-v2v-in-place on one image: $(ratio "$v2v" "$apply1")x faster."
  echo "batch --apply throughput vs virt-v2v-in-place one by one: 10 images $(ratio "$v2v10" "$batch_apply_10")x, 20 images $(ratio "$v2v20" "$batch_apply_20")x (target >= 10)."
fi
echo "Logs and images: $work"
