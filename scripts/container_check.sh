#!/usr/bin/env bash
# Build the serving image with podman, run it, check /ready, the health check and a /predict,
# then stop it and print the image size.
#
#   scripts/container_check.sh [BUNDLE]
#
# BUNDLE is a bundle written by `imgclf export`, or a run directory (served with TensorFlow).
# Without one, a tiny model is trained and exported into a temporary folder first (about half
# a minute, with .venv's TensorFlow).
#
# Environment:
#   BASE_IMAGE      base of both build stages. Default: localhost/debian-python:bookworm, which
#                   is made with debootstrap when podman does not have it (needs root and the
#                   Debian mirror), for machines that cannot pull official images.
#   RUNTIME         auto (default), litert or tensorflow; passed to the Dockerfile.
#   IMAGE           tag of the built image. Default: localhost/imgclf-serve:check.
#   PORT            port the container listens on. Default 18080.
#   KEEP_IMAGE=1    keep the image afterwards (it is removed by default).
#   PYTHON          Python with imgclf installed, for the tiny bundle. Default: .venv/bin/python.
#
# The container runs with --network host, so the checks reach it on 127.0.0.1 and nothing
# else is contacted. Building needs the package index: the host's CA certificates are mounted
# into the build for it.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE="${BASE_IMAGE:-localhost/debian-python:bookworm}"
RUNTIME="${RUNTIME:-auto}"
IMAGE="${IMAGE:-localhost/imgclf-serve:check}"
PORT="${PORT:-18080}"
PYTHON="${PYTHON:-.venv/bin/python}"
NAME="imgclf-serve-check-$$"

say() { printf 'container_check: %s\n' "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

command -v podman >/dev/null || fail "podman is not installed (Debian: apt-get install podman runc)"

# Podman's defaults here fail in two ways: raising rlimits is refused, and crun cannot use this
# cgroup layout. Both settings apply to this script's podman calls only.
work="$(mktemp -d)"
trap 'podman --runtime runc --cgroup-manager=cgroupfs rm -f "$NAME" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
printf '[containers]\ndefault_ulimits = []\n' > "$work/containers.conf"
export CONTAINERS_CONF="$work/containers.conf"
podman_() { podman --runtime runc --cgroup-manager=cgroupfs "$@"; }

bundle="${1:-}"
if [ -z "$bundle" ]; then
  say "training and exporting a tiny model into $work/bundle"
  IMGCLF_CACHE_DIR="$work/cache" "$PYTHON" - "$work" <<'PY'
import sys
from pathlib import Path

sys.path.insert(0, "tests")
from tiny_run import make_run
from imgclf.export import ExportOptions, export_bundle

root = Path(sys.argv[1])
export_bundle(make_run(root / "tiny"), root / "bundle", ExportOptions(formats=["keras", "tflite"], name="tiny"))
PY
  bundle="$work/bundle"
fi
[ -f "$bundle/imgclf.json" ] || [ -f "$bundle/model.keras" ] || fail "$bundle is neither a bundle nor a run directory"

if [ "$BASE_IMAGE" = "localhost/debian-python:bookworm" ] && ! podman_ image exists "$BASE_IMAGE"; then
  command -v debootstrap >/dev/null || fail "$BASE_IMAGE is missing and debootstrap is not installed"
  say "making $BASE_IMAGE with debootstrap"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$work/rootfs" \
    http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 || fail "debootstrap failed; see $work/debootstrap.log"
  tar -C "$work/rootfs" -c . | podman_ import - "$BASE_IMAGE" >/dev/null
  rm -rf "$work/rootfs"
fi

say "building $IMAGE from $BASE_IMAGE (RUNTIME=$RUNTIME)"
context="$work/context"
mkdir -p "$context"
cp -r Dockerfile .dockerignore pyproject.toml README.md src "$context/"
cp -r "$bundle" "$context/model"
dangling_before="$(podman_ images --quiet --filter dangling=true | sort)"
started=$(date +%s)
podman_ build --format docker --network host -v /etc/ssl/certs:/etc/ssl/certs:ro \
  --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg RUNTIME="$RUNTIME" --build-arg MODEL_DIR=model \
  -t "$IMAGE" "$context" >"$work/build.log" 2>&1 || { tail -30 "$work/build.log" >&2; fail "podman build failed"; }
say "built in $(( $(date +%s) - started )) s"
# The build stage stays behind as an untagged image; remove those this build made.
comm -13 <(echo "$dangling_before") <(podman_ images --quiet --filter dangling=true | sort) \
  | xargs -r podman --runtime runc --cgroup-manager=cgroupfs rmi >/dev/null 2>&1 || true

say "starting the container on 127.0.0.1:$PORT"
# No systemd here to run the health check on a timer, so it is run once by hand below.
podman_ run -d --rm --network host --health-interval disable --name "$NAME" -e IMGCLF_PORT="$PORT" "$IMAGE" >/dev/null

ready=""
for _ in $(seq 1 120); do
  if curl -sf "http://127.0.0.1:$PORT/ready" >"$work/ready.json" 2>/dev/null; then ready=1; break; fi
  podman_ container exists "$NAME" || break
  sleep 1
done
if [ -z "$ready" ]; then
  podman_ logs "$NAME" 2>&1 | tail -30 >&2 || true
  fail "/ready did not return 200 within 120 s"
fi
say "ready: $(cat "$work/ready.json")"

"$PYTHON" - "$work/probe.png" <<'PY'
import sys
from PIL import Image

Image.new("RGB", (40, 30), (220, 40, 40)).save(sys.argv[1])
PY
status=$(curl -s -o "$work/predict.json" -w '%{http_code}' -F "file=@$work/probe.png" "http://127.0.0.1:$PORT/predict")
[ "$status" = 200 ] || fail "/predict returned $status: $(cat "$work/predict.json")"
grep -q '"class"' "$work/predict.json" || fail "/predict returned no class: $(cat "$work/predict.json")"
say "predict: $(cat "$work/predict.json")"

status=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: image/png' --data-binary "@$work/probe.png" \
  "http://127.0.0.1:$PORT/predict")
[ "$status" = 415 ] || fail "a raw image body returned $status, expected 415"

podman_ healthcheck run "$NAME" >/dev/null || fail "the image's HEALTHCHECK failed"
user=$(podman_ exec "$NAME" id -u)
[ "$user" != 0 ] || fail "the server runs as root"
runtime=$(curl -s "http://127.0.0.1:$PORT/metadata" | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["runtime"])')
has_tensorflow=$(podman_ exec "$NAME" python3 -c 'import importlib.util; print(importlib.util.find_spec("tensorflow") is not None)')
say "health check passed; user id $user; runtime $runtime; TensorFlow installed: $has_tensorflow"
if [ "$runtime" = tflite ] && [ "$RUNTIME" != tensorflow ] && [ "$has_tensorflow" != False ]; then
  fail "a TFLite image must not contain TensorFlow"
fi

podman_ stop -t 30 "$NAME" >/dev/null
size=$(podman_ image inspect --format '{{.Size}}' "$IMAGE")
say "stopped; image $IMAGE is $(( size / 1000000 )) MB"
if [ "${KEEP_IMAGE:-0}" != 1 ]; then
  podman_ rmi -f "$IMAGE" >/dev/null
fi
say "passed"
