#!/bin/sh
# Smoke test: runs every image briefly on QEMU and checks its output.
# hello, selftest and compute must match expected/NAME.txt byte for byte (tern must too).
set -u
cd "$(dirname "$0")"
QEMU=${QEMU:-qemu-system-riscv32}
OUT=build/check
mkdir -p "$OUT"
failed=0

# run NAME SECONDS APPEND [QEMU ARGS...]: output in $OUT/NAME.out, exit code in $rc
run() {
    name=$1 secs=$2 append=$3
    shift 3
    timeout -k 2 "$secs" "$QEMU" -M virt -bios none -kernel "images/$name.elf" -display none \
        -monitor none -serial stdio -m 256M "$@" -append "$append" </dev/null >"$OUT/$name.out" 2>"$OUT/$name.err"
    rc=$?
}
pass() { echo "ok   $1"; }
fail() { echo "FAIL $1"; failed=1; }

for app in hello selftest compute; do
    args=""
    [ "$app" = hello ] && args="greeting=hi n=42"
    run "$app" 60 "$args"
    # UPDATE=1 ./check.sh accepts the current output as the new reference
    [ "${UPDATE:-0}" = 1 ] && [ "$rc" = 0 ] && cp "$OUT/$app.out" "expected/$app.txt"
    if [ "$rc" = 0 ] && cmp -s "$OUT/$app.out" "expected/$app.txt"; then
        pass "$app"
    else
        fail "$app (exit $rc; diff expected/$app.txt $OUT/$app.out)"
    fi
done

# verify runs forever: expect 'A', then only 'B's, for a few seconds
run verify 3 "region=64M"
if [ "$rc" = 124 ] && grep -Eq '^AB+$' "$OUT/verify.out"; then
    pass "verify ($(tr -cd B <"$OUT/verify.out" | wc -c) passes over 64 MiB in 3 s)"
else
    fail "verify (exit $rc, output $(head -c 40 "$OUT/verify.out"))"
fi

# munch stops by itself with time=; its rss must check out in every status line
run munch 20 "time=2s wws=8M rate=16M pattern=hot-cold rss=8M stride=64 report=500ms"
if [ "$rc" = 0 ] && [ "$(grep -c 'rss=ok$' "$OUT/munch.out")" -ge 4 ] && ! grep -q BAD "$OUT/munch.out"; then
    pass "munch"
else
    fail "munch (exit $rc; see $OUT/munch.out)"
fi

# munch with the virtio-balloon driver self-ballooning while its heap grows and shrinks
run munch 20 "time=3s wws=2M rate=2M rss=2M report=500ms balloon=self balloon-period=200ms heap=4M:500ms,32M:500ms" \
    -global virtio-mmio.force-legacy=false -device virtio-balloon-device
if [ "$rc" = 0 ] && grep -q 'reclaimed=[1-9]' "$OUT/munch.out" && ! grep -q 'BAD\|failed' "$OUT/munch.out"; then
    pass "munch balloon=self"
else
    fail "munch balloon=self (exit $rc; see $OUT/munch.out)"
fi

# the vsock services refuse to start without a vsock device (QEMU here has no vhost-vsock)
run kv 10 ""
if [ "$rc" = 2 ] && grep -q 'kv: no usable virtio-vsock device' "$OUT/kv.out"; then pass "kv without vsock"; else fail "kv without vsock (exit $rc)"; fi

# a bad boot argument is refused with exit code 2
run verify 10 "region=lots"
if [ "$rc" = 2 ]; then pass "bad boot argument refused"; else fail "bad boot argument (exit $rc)"; fi

exit $failed
